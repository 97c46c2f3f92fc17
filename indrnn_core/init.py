"""Initialisation and constraint of the recurrent weights ``u``, following Li et al. (CVPR 2018, §3; and Deep
IndRNN, arXiv:1910.06251).

Why: ``|u|`` decides how long a unit remembers. Over ``T`` steps a unit's own contribution scales like ``u**T``, so
to keep gradients from exploding across a whole sequence the papers bound ``|u| <= magnitude**(1/T)`` (the
product then grows at most ``magnitude``-fold; MAG = 2 for the adding problem, 5 for pixel MNIST). Hidden layers
start with ``u ~ U(0, bound)``; a last layer whose output is read only at the final step starts with
``u ~ U(1/bound, bound)``, so that every unit keeps long memory from the start. The bound is re-applied after every
optimiser step by clipping, not by re-parametrising, as the authors do.
"""

import numpy as np


def recurrent_bound(seq_len, magnitude=2.0):
    """``magnitude ** (1 / seq_len)``: the largest ``|u|`` that lets a unit grow at most ``magnitude``-fold over
    ``seq_len`` steps. E.g. ``recurrent_bound(784, 5.0)`` ~ 1.00205."""
    if not isinstance(seq_len, (int, np.integer)) or isinstance(seq_len, bool) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    if not magnitude > 0:
        raise ValueError(f"magnitude must be > 0, got {magnitude!r}")
    return float(magnitude) ** (1.0 / seq_len)


def hidden_range(bound):
    """``(0, bound)``: the range of ``u`` for hidden layers."""
    return 0.0, float(bound)


def last_layer_range(bound):
    """``(1/bound, bound)``: the range of ``u`` for a last layer read only at the final step (long memory)."""
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound!r}")
    low, high = sorted((1.0 / bound, float(bound)))
    return low, high


def uniform_(u, low, high, rng=None):
    """Fill the NumPy array ``u`` in place with ``U(low, high)`` draws; returns ``u``."""
    rng = np.random.default_rng(rng)
    u[...] = rng.uniform(low, high, size=u.shape)
    return u


def clip_(u, bound):
    """Clip the NumPy array ``u`` in place to ``[-bound, bound]``; returns ``u``. Call after each optimiser step."""
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound!r}")
    np.clip(u, -bound, bound, out=u)
    return u
