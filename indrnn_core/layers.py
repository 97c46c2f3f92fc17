"""What a multi-layer IndRNN is, independent of any framework: the constructor checks, the per-layer sizes and
recurrent-weight ranges, and the order of the (layer, direction) states. Every adapter's layer (torch
``IndRNN``, the Flax and Keras layers) builds its parameters from a :class:`StackSpec` and runs its ``runs()`` in
order, so they agree on shapes, initialisation and the ``h_n`` layout.

Per layer ``k`` and direction ``d`` (0 forward, 1 backward when bidirectional)::

    h = recurrence(x_k @ W_ih^T, u, b, h0[k * num_directions + d], reverse=(d == 1))

with ``W_ih`` ``[H, in_k]`` drawn from ``U(-1/sqrt(H), 1/sqrt(H))`` (as ``nn.RNN``), ``u`` ``[H]`` from the
layer's recurrent range and ``b`` ``[H]`` zeros; the input of layer ``k > 0`` is the previous layer's output,
directions concatenated on the feature axis.

>>> spec = StackSpec.check(input_size=2, hidden_size=8, num_layers=2, bidirectional=True)
>>> [(r.index, r.layer, r.reverse, r.input_size) for r in spec.runs()]
[(0, 0, False, 2), (1, 0, True, 2), (2, 1, False, 16), (3, 1, True, 16)]
"""

import dataclasses
import functools
import math

import numpy as np

from . import init
from ._validate import activation_code

__all__ = ["StackSpec", "Run", "check_size", "check_bool"]


def check_size(name, value):
    """A positive int (a ValueError naming ``name`` otherwise)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_bool(name, value, hint=""):
    """A bool (0/1 accepted, as ``nn.RNN`` does); a TypeError naming ``name`` otherwise."""
    if not isinstance(value, (bool, int, np.bool_, np.integer)):
        raise TypeError(f"{name} must be a bool, got {value!r}{hint}")
    return bool(value)


@dataclasses.dataclass(frozen=True)
class Run:
    """One recurrence of the stack: ``index`` into ``h0``/``h_n`` (``layer * num_directions + direction``), its
    ``layer``, ``direction``, whether it runs in ``reverse`` and its ``input_size``."""

    index: int
    layer: int
    direction: int
    reverse: bool
    input_size: int


@dataclasses.dataclass(frozen=True)
class StackSpec:
    """A checked multi-layer IndRNN configuration (build one with :meth:`check`)."""

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    bidirectional: bool = False
    activation: str = "relu"
    dropout: float = 0.0
    recurrent_ranges: tuple = ((0.0, 1.0),)
    recurrent_bound: float | None = None
    recurrent_min_abs: float | None = None

    @classmethod
    def check(cls, input_size, hidden_size, num_layers=1, *, bias=True, bidirectional=False, activation="relu",
              dropout=0.0, recurrent_init=None, recurrent_bound=None, recurrent_min_abs=None, bias_hint=""):
        """Validate a layer constructor's arguments, each error naming its argument. ``recurrent_init``: see
        :func:`indrnn_core.init.resolve_ranges`; ``recurrent_min_abs``: :func:`indrnn_core.init.check_min_abs`.
        ``bias_hint`` is appended to a bad ``bias``'s message."""
        input_size = check_size("input_size", input_size)
        hidden_size = check_size("hidden_size", hidden_size)
        num_layers = check_size("num_layers", num_layers)
        bias = check_bool("bias", bias, bias_hint)
        bidirectional = check_bool("bidirectional", bidirectional)
        activation_code(activation)
        if (not isinstance(dropout, (int, float, np.floating, np.integer)) or isinstance(dropout, bool)
                or not 0 <= dropout <= 1):
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        recurrent_bound = init.check_bound(recurrent_bound)
        return cls(input_size, hidden_size, num_layers, bias, bidirectional, activation, float(dropout),
                   tuple(init.resolve_ranges(recurrent_init, num_layers)), recurrent_bound,
                   init.check_min_abs(recurrent_min_abs, recurrent_bound))

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def num_states(self):
        """Rows of ``h0``/``h_n``: ``num_layers * num_directions``."""
        return self.num_layers * self.num_directions

    @property
    def output_size(self):
        """Features of the stack's output: ``num_directions * hidden_size``."""
        return self.num_directions * self.hidden_size

    @property
    def input_weight_bound(self):
        """``W_ih ~ U(-bound, bound)`` with ``bound = 1/sqrt(hidden_size)``, as ``nn.RNN``."""
        return 1.0 / math.sqrt(self.hidden_size)

    def layer_input_size(self, layer):
        return self.input_size if layer == 0 else self.output_size

    def runs(self):
        """Every recurrence in the order the stack runs them and ``h_n`` stacks them (a tuple built once: layers
        read it on every call)."""
        return self._runs

    @functools.cached_property
    def _runs(self):
        return tuple(Run(layer * self.num_directions + d, layer, d, d == 1, self.layer_input_size(layer))
                     for layer in range(self.num_layers) for d in range(self.num_directions))

    def recurrent_range(self, run):
        """``(low, high)`` of the uniform init of ``run``'s ``u``."""
        return self.recurrent_ranges[run.layer]

    def state_shape(self, batch):
        """``h0``/``h_n`` shape for ``batch`` sequences: ``(num_states, batch, hidden_size)``."""
        return (self.num_states, batch, self.hidden_size)
