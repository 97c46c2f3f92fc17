"""Initialisation and constraint of the recurrent weights ``u``, following Li et al. (CVPR 2018, §3; and Deep
IndRNN, arXiv:1910.06251).

Why: ``|u|`` decides how long a unit remembers. Over ``T`` steps a unit's own contribution scales like ``u**T``, so
to keep gradients from exploding across a whole sequence the papers bound ``|u| <= magnitude**(1/T)`` (the
product then grows at most ``magnitude``-fold; MAG = 2 for the adding problem, 5 for pixel MNIST). Hidden layers
start with ``u ~ U(0, bound)``; a last layer whose output is read only at the final step starts with
``u ~ U(1/bound, bound)``, so that every unit keeps long memory from the start. The bound is re-applied after every
optimiser step by clipping, not by re-parametrising, as the authors do. Optionally a minimum ``|u|`` is enforced
too (``min_abs``, as the TensorFlow IndRNN cell's ``recurrent_min_abs``), so no unit loses its memory entirely.
"""

import math

import numpy as np


def recurrent_bound(seq_len, magnitude=2.0):
    """``magnitude ** (1 / seq_len)``: the largest ``|u|`` that lets a unit grow at most ``magnitude``-fold over
    ``seq_len`` steps. E.g. ``recurrent_bound(784, 5.0)`` ~ 1.00205. ``seq_len`` may be a float (e.g. the mean
    length of variable-length data) as long as it is positive and finite."""
    if (not isinstance(seq_len, (int, float, np.integer, np.floating)) or isinstance(seq_len, (bool, np.bool_))
            or not math.isfinite(seq_len) or not seq_len > 0):
        raise ValueError(f"seq_len must be a positive number, got {seq_len!r}")
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


def clip_(u, bound, min_abs=None):
    """Clip the NumPy array ``u`` in place to ``[-bound, bound]`` (no maximum when ``bound`` is None), then move
    every value with ``|u| < min_abs`` to ``sign(u) * min_abs``, zeros (of either sign) to ``+min_abs`` (see
    :func:`check_min_abs`); returns ``u``. Call after each optimiser step."""
    bound = None if bound is None else check_bound(bound, "bound")
    min_abs = check_min_abs(min_abs, bound, "min_abs")
    if bound is not None:
        np.clip(u, -bound, bound, out=u)
    if min_abs:
        u[...] = np.where(u < 0, np.minimum(u, -min_abs), np.maximum(u, min_abs))
    return u


DEFAULT_RANGE = (0.0, 1.0)  # the paper's default range of u for hidden layers when no bound is set


def layer_ranges(num_layers, bound=None, *, long_memory_last_layer=True):
    """The papers' per-layer ranges of ``u``, for a stack of ``num_layers``: ``hidden_range(bound)`` for every layer
    and, with ``long_memory_last_layer`` (a last layer read only at the final step, as in the adding problem and
    sequential MNIST), ``last_layer_range(bound)`` for the last one. Without a bound, ``DEFAULT_RANGE`` for all.

    >>> layer_ranges(2, 2 ** (1 / 100))                  # doctest: +ELLIPSIS
    [(0.0, 1.0069...), (0.9931..., 1.0069...)]
    """
    if not isinstance(num_layers, (int, np.integer)) or isinstance(num_layers, bool) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
    if bound is None:
        return [DEFAULT_RANGE] * num_layers
    bound = check_bound(bound)
    last = last_layer_range(bound) if long_memory_last_layer else hidden_range(bound)
    return [hidden_range(bound)] * (num_layers - 1) + [last]


def _is_range(r):
    return (isinstance(r, (tuple, list)) and len(r) == 2
            and all(isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) for v in r)
            and r[0] <= r[1])


def resolve_ranges(recurrent_init, num_layers):
    """A layer constructor's ``recurrent_init`` as ``num_layers`` ``(low, high)`` float tuples: None means
    ``DEFAULT_RANGE`` for every layer; one ``(low, high)`` applies to every layer; a list gives one per layer
    (e.g. :func:`layer_ranges`). Anything else is a ValueError naming the argument."""
    if recurrent_init is None:
        return [DEFAULT_RANGE] * num_layers
    if _is_range(recurrent_init):
        return [(float(recurrent_init[0]), float(recurrent_init[1]))] * num_layers
    if (isinstance(recurrent_init, (tuple, list)) and len(recurrent_init) == num_layers
            and all(_is_range(r) for r in recurrent_init)):
        return [(float(lo), float(hi)) for lo, hi in recurrent_init]
    raise ValueError(f"recurrent_init must be None, a (low, high) tuple with low <= high, or a list of "
                     f"{num_layers} such tuples (one per layer), got {recurrent_init!r}")


def check_bound(recurrent_bound, name="recurrent_bound"):
    """``recurrent_bound`` as a float (None stays None); a ValueError naming ``name`` unless it is a positive
    number."""
    if recurrent_bound is None:
        return None
    if (not isinstance(recurrent_bound, (int, float, np.floating, np.integer)) or isinstance(recurrent_bound, bool)
            or not recurrent_bound > 0):
        raise ValueError(f"{name} must be None or a positive float, got {recurrent_bound!r}")
    return float(recurrent_bound)


def check_min_abs(recurrent_min_abs, recurrent_bound=None, name="recurrent_min_abs"):
    """``recurrent_min_abs`` as a float (None stays None): the smallest ``|u|`` that clipping leaves, applied after
    the maximum ``recurrent_bound``. A ValueError naming ``name`` unless it is a number ``>= 0`` and, with a bound,
    ``<= recurrent_bound`` (otherwise no ``u`` could satisfy both).

    What clipping does with it: ``|u| < min_abs`` becomes ``sign(u) * min_abs``; ``u == 0`` (either sign) becomes
    ``+min_abs``: the minimum is there to keep every unit's memory, and a zero ``u`` is exactly the memory-less
    unit it rules out (TensorFlow's IndRNN cell leaves an exact zero at zero, since ``sign(0) = 0``; the positive
    side is the one the papers' initialisations draw from)."""
    if recurrent_min_abs is None:
        return None
    if (not isinstance(recurrent_min_abs, (int, float, np.floating, np.integer))
            or isinstance(recurrent_min_abs, bool) or not 0 <= recurrent_min_abs < math.inf):
        raise ValueError(f"{name} must be None or a float >= 0, got {recurrent_min_abs!r}")
    if recurrent_bound is not None and recurrent_min_abs > recurrent_bound:
        raise ValueError(f"{name}={recurrent_min_abs!r} exceeds the maximum |u| (recurrent_bound="
                         f"{recurrent_bound!r}): no recurrent weight could satisfy both")
    return float(recurrent_min_abs)
