"""Flax adapter: :class:`IndRNN`, a multi-layer IndRNN as a ``flax.nnx.Module``, and the recurrent-weight clipping
that the papers' recipe applies after every optimiser step (:func:`clip_recurrent_weights`).

Per layer and direction: ``h_t = act(x_t @ kernel + recurrent_kernel * h_{t-1} + bias)``. The projection is one
matmul over all steps; the recurrence is :func:`indrnn_core.adapters.jax.indrnn_with_state` (the Numba kernels
through XLA's FFI: ``jit``, ``grad`` and ``vmap`` work as with any Flax layer). What the stack is -- constructor
checks, per-layer sizes, init ranges, the order of the ``h_n`` rows -- is :class:`indrnn_core.layers.StackSpec`,
shared with the torch layer, so both build the same model from the same arguments.

Shapes: inputs ``[B, T, in]`` (batch-first, as Flax's ``nnx.RNN``; ``[T, B, in]`` with ``time_major=True``);
outputs ``[B, T, num_directions * H]``; ``h0``/``h_n`` ``[num_layers * num_directions, B, H]``.

Example (the adding problem's settings from the paper)::

    >>> import jax, jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> from indrnn_core import init
    >>> from indrnn_core.adapters.flax import IndRNN, clip_recurrent_weights
    >>> bound = init.recurrent_bound(100)                      # 2 ** (1 / T)
    >>> rnn = IndRNN(2, 16, num_layers=2, recurrent_bound=bound,
    ...              recurrent_init=init.layer_ranges(2, bound), rngs=nnx.Rngs(0))
    >>> out, h_n = rnn(jnp.ones((4, 100, 2)))                  # [B, T, in] -> [B, T, H], [layers, B, H]
    >>> out.shape, h_n.shape
    ((4, 100, 16), (2, 4, 16))
    >>> optimizer = nnx.Optimizer(rnn, optax.adam(1e-3), wrt=nnx.Param)
    >>> @nnx.jit
    ... def train_step(model, optimizer, x):
    ...     grads = nnx.grad(lambda m: m(x)[1][-1].mean())(model)
    ...     optimizer.update(model, grads)
    ...     clip_recurrent_weights(model)                      # |u| <= bound after every step
    >>> train_step(rnn, optimizer, jnp.ones((4, 100, 2)))
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes as _dtypes

from indrnn_core import init as _init
from indrnn_core.layers import StackSpec, check_bool, check_size

from .jax import indrnn_with_state, project

__all__ = ["IndRNN", "RecurrentKernel", "clip_recurrent_weights"]


class RecurrentKernel(nnx.Param):
    """The recurrent weights ``u`` ``[H]``: an ``nnx.Param`` (trained by ``nnx.Optimizer(..., wrt=nnx.Param)``) of
    its own type, so they can be selected by filter, e.g. ``nnx.state(model, RecurrentKernel)``."""


def _uniform(low: float, high: float):
    """An initializer drawing ``U(low, high)`` (Flax's ``initializers.uniform`` only draws ``U(0, scale)``)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, low, high)

    return init


class _Run(nnx.Module):
    """The parameters of one (layer, direction) of the stack."""

    def __init__(self, in_features, hidden_features, recurrent_range, kernel_init, use_bias, param_dtype, rngs):
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, hidden_features), param_dtype))
        self.recurrent_kernel = RecurrentKernel(_uniform(*recurrent_range)(rngs.params(), (hidden_features,),
                                                                           param_dtype))
        self.bias = nnx.Param(jnp.zeros((hidden_features,), param_dtype)) if use_bias else None


class IndRNN(nnx.Module):
    """Multi-layer (optionally bidirectional) IndRNN: per layer ``h_t = act(x_t @ W + u * h_{t-1} + b)``.

    Args:
        in_features: features of each input step. hidden_features: units per layer and direction (H).
        num_layers: stacked layers; layer ``k > 0`` reads layer ``k - 1``'s output (directions concatenated).
        activation: "relu" (default), "tanh", "sigmoid" or "identity".
        bidirectional: add a direction running each sequence backwards from its last valid step.
        use_bias: a bias ``[H]`` per layer and direction (added inside the recurrence; initialised to 0).
        time_major: inputs and outputs are ``[T, B, ...]`` instead of ``[B, T, ...]`` (as ``nnx.RNN``).
        dropout: dropout rate on the outputs of every layer but the last (``nnx.Dropout``, element-wise; active
            until ``model.eval()``, drawing from the ``rngs``' ``dropout`` stream).
        recurrent_init: range of the uniform init of ``u``: None -> U(0, 1) (the paper's default); a
            ``(low, high)`` tuple for all layers; or a list of tuples, one per layer, e.g.
            ``indrnn_core.init.layer_ranges(num_layers, bound)`` (the papers' recipe).
        recurrent_bound: None or a float: the largest ``|u|`` that :func:`clip_recurrent_weights` keeps (e.g.
            ``indrnn_core.init.recurrent_bound(T)``). Clipping is not automatic: call it after each update.
        recurrent_min_abs: None or a float ``<= recurrent_bound``: clipping also moves every
            ``|u| < recurrent_min_abs`` to ``sign(u) * recurrent_min_abs`` (0 to ``+recurrent_min_abs``).
        kernel_init: initializer of the input kernels ``[in, H]``; default ``U(-1/sqrt(H), 1/sqrt(H))`` (as torch's
            ``nn.RNN`` and this project's torch layer).
        dtype: the computation dtype (default: inferred from the input and the parameters, as Flax layers do).
            The kernels run float32 and float64 (float64 needs ``jax_enable_x64``).
        param_dtype: dtype of the parameters (float32).
        rngs: ``nnx.Rngs``; the ``params`` stream initialises the weights.

    Parameters (``model.runs[i]``, one per (layer, direction) in ``h_n``'s row order, ``i = layer *
    num_directions + direction``): ``kernel`` ``[in_k, H]`` (``nnx.Param``), ``recurrent_kernel`` ``[H]``
    (:class:`RecurrentKernel`, the vector ``u``), ``bias`` ``[H]`` (``nnx.Param``; None without ``use_bias``).

    Call: ``model(inputs, h0=None, *, lengths=None) -> (outputs, h_n)``; see :meth:`__call__`.
    """

    def __init__(self, in_features: int, hidden_features: int, num_layers: int = 1, *, activation: str = "relu",
                 bidirectional: bool = False, use_bias: bool = True, time_major: bool = False, dropout: float = 0.0,
                 recurrent_init=None, recurrent_bound: Optional[float] = None,
                 recurrent_min_abs: Optional[float] = None, kernel_init=None, dtype: Any = None,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        # Flax's argument names, checked by the core's checks under those names; everything else by StackSpec.
        check_size("in_features", in_features)
        check_size("hidden_features", hidden_features)
        check_bool("use_bias", use_bias)
        self.spec = spec = StackSpec.check(
            in_features, hidden_features, num_layers, bias=use_bias, bidirectional=bidirectional,
            activation=activation, dropout=dropout, recurrent_init=recurrent_init, recurrent_bound=recurrent_bound,
            recurrent_min_abs=recurrent_min_abs)
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs must be an nnx.Rngs, got {type(rngs).__name__}")
        self.in_features, self.hidden_features, self.num_layers = (spec.input_size, spec.hidden_size,
                                                                   spec.num_layers)
        self.activation, self.bidirectional, self.use_bias = spec.activation, spec.bidirectional, spec.bias
        self.time_major = check_bool("time_major", time_major)
        self.recurrent_bound = spec.recurrent_bound
        self.recurrent_min_abs = spec.recurrent_min_abs
        self.dtype, self.param_dtype = dtype, param_dtype
        if kernel_init is None:
            kernel_init = _uniform(-spec.input_weight_bound, spec.input_weight_bound)
        self.runs = nnx.List([_Run(run.input_size, spec.hidden_size, spec.recurrent_range(run), kernel_init,
                                   spec.bias, param_dtype, rngs) for run in spec.runs()])
        self.dropout = nnx.Dropout(spec.dropout, rngs=rngs) if spec.dropout else None

    @property
    def num_directions(self) -> int:
        return self.spec.num_directions

    def __call__(self, inputs, h0=None, *, lengths=None):
        """Run the stack.

        Args:
            inputs: ``[B, T, in_features]`` (``[T, B, in_features]`` with ``time_major``).
            h0: ``[num_layers * num_directions, B, H]`` initial states or None (zeros); row ``layer *
                num_directions + direction``.
            lengths: ``[B]`` integers in ``[0, T]`` or None: valid steps per sequence of a padded batch (a NumPy
                or JAX array, traced under ``jit`` too). Outputs past a sequence's end are 0; ``h_n`` holds each
                sequence's last valid step; the backward direction starts there.

        Returns:
            ``(outputs, h_n)``: ``[B, T, num_directions * H]`` (``[T, B, ...]`` with ``time_major``), the last
            layer's outputs with the directions concatenated; ``h_n`` ``[num_layers * num_directions, B, H]``.
        """
        spec = self.spec
        shape = getattr(inputs, "shape", None)
        if shape is None or len(shape) != 3 or shape[-1] != spec.input_size:
            layout = "[T, B, {0}]" if self.time_major else "[B, T, {0}]"
            raise ValueError(f"inputs must have shape {layout.format(spec.input_size)}, got "
                             f"{tuple(shape) if shape is not None else type(inputs).__name__}")
        batch = shape[1 if self.time_major else 0]
        if h0 is not None and tuple(getattr(h0, "shape", ())) != spec.state_shape(batch):
            raise ValueError(f"h0 must have shape {spec.state_shape(batch)} (num_layers * num_directions = "
                             f"{spec.num_states}), got {tuple(getattr(h0, 'shape', ())) or type(h0).__name__}")
        layer_input, finals, outputs = inputs, [], []
        for run, params in zip(spec.runs(), self.runs):
            bias = None if params.bias is None else params.bias[...]
            x, kernel, u, bias, state = _dtypes.promote_dtype(
                (layer_input, params.kernel[...], params.recurrent_kernel[...], bias,
                 None if h0 is None else h0[run.index]), dtype=self.dtype)
            h, last = indrnn_with_state(project(x, kernel), u, bias, state, activation=spec.activation,
                                        batch_first=not self.time_major, lengths=lengths, reverse=run.reverse)
            finals.append(last)
            outputs.append(h)
            if len(outputs) == spec.num_directions:  # the layer is complete: its output feeds the next one
                layer_input = outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=-1)
                outputs = []
                if self.dropout is not None and run.layer < spec.num_layers - 1:
                    layer_input = self.dropout(layer_input)
        return layer_input, jnp.stack(finals)

    def clip_recurrent(self, bound: Optional[float] = None, min_abs: Optional[float] = None) -> "IndRNN":
        """Clip every ``u`` in place to ``[-bound, bound]``, then move each ``|u| < min_abs`` to
        ``sign(u) * min_abs`` (``u == 0`` to ``+min_abs``: :func:`indrnn_core.init.check_min_abs` says why).
        ``bound`` and ``min_abs`` default to the module's ``recurrent_bound`` and ``recurrent_min_abs``; a None
        limit is not applied. Works inside ``nnx.jit``. Returns self."""
        bound = self.recurrent_bound if bound is None else _init.check_bound(bound, "bound")
        min_abs = self.recurrent_min_abs if min_abs is None else _init.check_min_abs(min_abs, bound, "min_abs")
        if bound is None and not min_abs:
            return self
        for params in self.runs:
            u = params.recurrent_kernel[...]
            if bound is not None:
                u = jnp.clip(u, -bound, bound)
            if min_abs:
                u = jnp.where(u < 0, jnp.minimum(u, -min_abs), jnp.maximum(u, min_abs))
            params.recurrent_kernel[...] = u
        return self


def clip_recurrent_weights(module: nnx.Module, bound: Optional[float] = None,
                           min_abs: Optional[float] = None) -> nnx.Module:
    """Clip the recurrent weights of every :class:`IndRNN` inside ``module`` (itself included) in place, each to its
    own ``recurrent_bound`` / ``recurrent_min_abs`` (``bound`` / ``min_abs`` when given): see
    :meth:`IndRNN.clip_recurrent`. Returns ``module``.

    The papers re-apply the bound after every optimiser step, so call it right after ``optimizer.update(model,
    grads)``, inside the same ``nnx.jit``-ed step (it is a few element-wise ops on the ``u`` vectors)::

        optimizer.update(model, grads)
        clip_recurrent_weights(model)

    (A clip on the new parameters rather than an optax transformation of the updates: an update cannot express
    "the result is exactly within the bound" in floating point, and ``nnx.Optimizer`` users update the module in
    place anyway.)
    """
    for _, node in nnx.iter_graph(module):
        if isinstance(node, IndRNN):
            node.clip_recurrent(bound, min_abs)
    return module
