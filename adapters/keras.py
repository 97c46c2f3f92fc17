"""Keras 3 adapter: the :class:`IndRNN` layer and :class:`IndRNNCell`, on the torch, jax and tensorflow backends.

One code path for every backend: the layer projects its input with ``keras.ops.matmul`` and hands the projection
to the active backend's adapter op (``indrnn_core.adapters.torch``, ``.jax`` or ``.tensorflow``
``indrnn_with_state``), which runs the fused kernels and carries its own gradient. No recurrence math lives here.

* :class:`IndRNN` is a ``keras.layers.RNN`` (as ``SimpleRNN`` and ``LSTM`` are) whose loop is one fused kernel
  call instead of one cell call per step; ``return_sequences``, ``return_state``, ``go_backwards``,
  ``initial_state``, ``stateful`` + ``reset_state()`` (Keras' rule: a fixed batch size), masks, serialisation and
  ``keras.layers.Bidirectional`` come from ``RNN`` and behave as there. Arguments are those of the Keras 2 IndRNN
  layers, plus the TensorFlow IndRNN cell's ``recurrent_max_abs`` / ``recurrent_min_abs``.
* Weights, as in those layers: ``kernel`` ``(input_dim, units)``, ``recurrent_kernel`` ``(1, units)`` (the
  element-wise ``u``), ``bias`` ``(units,)``: ``IndRNN(128)`` on 2 input features has 512 parameters. Keras
  constraints act on axis 0, so on a ``(1, units)`` kernel ``keras.constraints.MaxNorm(c)`` bounds each ``|u_j|``
  by ``c`` (on a ``(units,)`` vector it would rescale the whole vector instead).
* Defaults follow the core (:class:`indrnn_core.layers.StackSpec`): ``kernel`` ~ ``U(-1/sqrt(units),
  1/sqrt(units))``, ``recurrent_kernel`` ~ ``U(recurrent_init)`` (``(0, 1)`` unless given; the papers' ranges come
  from :func:`indrnn_core.init.layer_ranges`), ``bias`` zeros. Any Keras initializer may replace them.
* **Masks** (``Masking``, ``Embedding(mask_zero=True)``, ``mask=``): Keras' RNN convention exactly: a masked step
  leaves the state unchanged and outputs the previous step's output (zeros before the first valid step; zeros
  with ``zero_output_for_mask=True``). The fused kernels take each sequence's valid-step count as ``lengths``; a
  right-padded mask (the usual case) needs nothing more. Any other mask is served exactly too: each sequence's
  valid steps are gathered to the front (a permutation, by ``argsort``), run with ``lengths``, and every output is
  gathered back from the last valid step at or before it. (Keras' own JAX ``lax.scan`` path outputs the initial
  state, not zeros, at masked steps before the first valid one; its TF and torch paths give zeros, as here.)
* ``dropout``: one input mask per sequence, reused at every step (Keras' rule). ``recurrent_dropout`` drops units
  of ``h_{t-1}`` before the product with ``u``: a per-sample ``u`` that the fused kernels cannot express, so a
  training call with ``recurrent_dropout > 0`` steps the cell through ``keras.layers.RNN``'s loop (one T=1 kernel
  call per step: correct, slower). Inference and ``recurrent_dropout=0`` stay fused.
* ``recurrent_max_abs`` / ``recurrent_min_abs``: bounds on ``|u|`` applied in the forward pass, as the TF IndRNN
  cell applied them (clipped ``u`` gets no gradient beyond the bound); an exact zero goes to ``+min_abs`` (the
  core's rule, :func:`indrnn_core.init.clip_`; the TF cell left it at 0). To clip the stored weights after every
  optimiser step instead (the papers' recipe), pass ``recurrent_constraint=RecurrentClip(bound)``.
* ``unroll`` is accepted and only matters where the cell is stepped (``recurrent_dropout`` in training); the fused
  kernel is already one loop.
* XLA: on the tensorflow backend the kernels run through ``tf.py_function``, which XLA cannot compile; the layer
  sets ``supports_jit = False`` so ``model.compile(jit_compile="auto")`` (Keras' default, XLA when a GPU exists)
  compiles without XLA. An explicit ``jit_compile=True`` makes Keras warn and fall back to no XLA. On jax the op is
  jit-native.
* Dtypes: the kernels compute in float32 or float64; float16/bfloat16 compute dtypes (mixed precision) run the
  recurrence in float32 and cast back.

Shapes: input ``[B, T, input_dim]`` (Keras is batch-first); output ``[B, units]`` or ``[B, T, units]``
(``return_sequences``); state ``[B, units]``.

Example::

    >>> import numpy as np, keras
    >>> from indrnn_core.adapters.keras import IndRNN
    >>> model = keras.Sequential([keras.Input((100, 2)), IndRNN(128), keras.layers.Dense(1)])
    >>> model.layers[0].count_params()
    512
    >>> model.compile("adam", "mse")
    >>> model.predict(np.zeros((4, 100, 2), "float32"), verbose=0).shape
    (4, 1)
"""
from __future__ import annotations

import importlib

import keras
import numpy as np
from keras import ops

from indrnn_core import init as core_init
from indrnn_core.layers import StackSpec, check_size

try:  # what keras.layers.RNN checks to create the dropout masks before its loop (not exported by Keras)
    from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell
except ImportError:  # pragma: no cover - a Keras that moved it: masks are then made inside the loop
    class DropoutRNNCell:  # noqa: D101 - the same contract, for a Keras without the class
        def _mask(self, attr, like, rate):
            if getattr(self, attr, None) is None and rate > 0:
                setattr(self, attr, keras.random.dropout(ops.ones_like(like), rate, seed=self.seed_generator))
            return getattr(self, attr, None)

        def get_dropout_mask(self, step_input):
            return self._mask("_dropout_mask", step_input, self.dropout)

        def get_recurrent_dropout_mask(self, step_input):
            return self._mask("_recurrent_dropout_mask", step_input, self.recurrent_dropout)

        def reset_dropout_mask(self):
            self._dropout_mask = None

        def reset_recurrent_dropout_mask(self):
            self._recurrent_dropout_mask = None

__all__ = ["IndRNN", "IndRNNCell", "RecurrentClip", "SUPPORTED_BACKENDS", "backend_op"]

SUPPORTED_BACKENDS = ("jax", "tensorflow", "torch")

if keras.config.backend() == "jax":
    # The JAX adapter's import sets the host allocator up for XLA's CPU runtime; that must happen before the model
    # runs anything (see indrnn_core.adapters.jax._retain_host_memory), not at the layer's first call.
    importlib.import_module("indrnn_core.adapters.jax")
# Keras activation names -> the kernels' activations (Keras calls the identity "linear"; None means it too).
_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "linear": "identity", "identity": "identity"}
_PACKAGE = "indrnn_core"  # the registered names: "indrnn_core>IndRNN", "indrnn_core>IndRNNCell", ...


def _check_backend() -> str:
    name = keras.config.backend()
    if name not in SUPPORTED_BACKENDS:
        raise ValueError(
            f"indrnn_core.adapters.keras runs on the Keras backends {', '.join(SUPPORTED_BACKENDS)}; the active "
            f"backend is {name!r}. Set KERAS_BACKEND to one of them before keras is imported.")
    return name


def backend_op():
    """The active Keras backend's ``indrnn_with_state`` (imported on first use); a ValueError naming the supported
    backends for any other (numpy, openvino)."""
    return importlib.import_module(f"indrnn_core.adapters.{_check_backend()}").indrnn_with_state


def _activation_name(activation) -> str:
    """The kernels' name for a Keras activation given by name, as a Keras function, or None (linear)."""
    name = activation if activation is None or isinstance(activation, str) else getattr(activation, "__name__", None)
    name = "linear" if name is None else name
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of 'relu', 'tanh', 'sigmoid', 'linear' (or None), or the Keras "
                         f"function of one of them: the fused kernels implement only these; got {activation!r}")
    return name


def _project(x, kernel):
    """``x @ kernel`` in ``x``'s dtype (Keras 3.15's torch ``ops.matmul`` computes float64 operands in float32;
    its einsum does not); on jax as the JAX adapter's :func:`~indrnn_core.adapters.jax.project` computes it (XLA's
    dot is slow for the 1-4 input features of pixel and adding tasks)."""
    backend = keras.config.backend()
    if backend == "jax":
        return importlib.import_module("indrnn_core.adapters.jax").project(x, kernel)
    if backend == "torch" and keras.backend.standardize_dtype(x.dtype) == "float64":
        return ops.einsum("...d,du->...u", x, kernel)
    return ops.matmul(x, kernel)


def _bounded(u, max_abs, min_abs):
    """``u`` clipped to ``|u| <= max_abs``, then ``|u| >= min_abs`` (zeros to ``+min_abs``), as
    :func:`indrnn_core.init.clip_` does on NumPy arrays. Comparisons and selections against bounds of ``u``'s own
    dtype: exact in float64 too (Keras 3.15's torch ``clip``/``minimum`` round float64 bounds to float32)."""
    if max_abs is not None:
        high = ops.full_like(u, max_abs)
        u = ops.where(u > high, high, ops.where(u < -high, -high, u))
    if min_abs:
        low = ops.full_like(u, min_abs)
        u = ops.where(u < 0, ops.where(u > -low, -low, u), ops.where(u < low, low, u))
    return u


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RecurrentClip(keras.constraints.Constraint):
    """Constraint clipping a recurrent kernel to ``min_abs <= |u| <= max_abs`` after every optimiser step (the
    papers' recipe; :func:`indrnn_core.init.clip_`'s rule). ``RecurrentClip(indrnn_core.init.recurrent_bound(T))``
    keeps each unit's growth over ``T`` steps at most 2-fold."""

    def __init__(self, max_abs=None, min_abs=None):
        self.max_abs = core_init.check_bound(max_abs, "max_abs")
        self.min_abs = core_init.check_min_abs(min_abs, self.max_abs, "min_abs")

    def __call__(self, w):
        w = ops.convert_to_tensor(w)
        return ops.cast(_bounded(w, self.max_abs, self.min_abs), w.dtype)

    def get_config(self):
        return {"max_abs": self.max_abs, "min_abs": self.min_abs}


def _check_rate(name, value):
    if (not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool)
            or not 0 <= value <= 1):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class IndRNNCell(keras.layers.Layer, DropoutRNNCell):
    """One IndRNN step ``h_t = act(x_t @ kernel + u * h_{t-1} + bias)`` for ``keras.layers.RNN``,
    ``keras.layers.StackedRNNCells`` and hand-written loops: the same weights and the same op as :class:`IndRNN`
    (a T=1 kernel call), so ``keras.layers.RNN(IndRNNCell(n))`` and ``IndRNN(n)`` agree.

    Args: as :class:`IndRNN` (cell arguments only). Call: ``cell(inputs [B, input_dim], states [[B, units]],
    training=False) -> (output [B, units], [new_state [B, units]])``.

    Example::

        >>> cells = [IndRNNCell(32), keras.layers.LSTMCell(32)]
        >>> keras.layers.RNN(cells)(np.ones((2, 5, 3), "float32")).shape
        (2, 32)
    """

    def __init__(self, units, activation="relu", use_bias=True, kernel_initializer=None, recurrent_initializer=None,
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, recurrent_init=None, recurrent_max_abs=None, recurrent_min_abs=None,
                 seed=None, **kwargs):
        _check_backend()
        units = check_size("units", units)
        self._activation_name = _activation_name(activation)
        dropout = _check_rate("dropout", dropout)
        recurrent_dropout = _check_rate("recurrent_dropout", recurrent_dropout)
        # The core's checks (and messages) for everything the stack spec holds; input_dim is checked at build.
        self._spec = StackSpec.check(1, units, activation=_ACTIVATIONS[self._activation_name], dropout=dropout,
                                     recurrent_init=recurrent_init, recurrent_bound=recurrent_max_abs,
                                     recurrent_min_abs=recurrent_min_abs, bias=use_bias)
        super().__init__(**kwargs)
        self.units = units
        self.use_bias = self._spec.bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer) if kernel_initializer else None
        self.recurrent_initializer = (keras.initializers.get(recurrent_initializer) if recurrent_initializer
                                      else None)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.recurrent_constraint = keras.constraints.get(recurrent_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.recurrent_init = self._spec.recurrent_ranges[0]
        self.recurrent_max_abs = self._spec.recurrent_bound
        self.recurrent_min_abs = self._spec.recurrent_min_abs
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.state_size = units
        self.output_size = units

    @property
    def activation(self):
        """The Keras activation function (``keras.activations.linear`` for the identity)."""
        return keras.activations.get(self._activation_name)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f"{type(self).__name__} needs a known input feature size, got input shape "
                             f"{tuple(input_shape)}")
        self._spec = StackSpec.check(input_dim, self.units, activation=self._spec.activation,
                                     dropout=self._spec.dropout, recurrent_init=[self.recurrent_init],
                                     recurrent_bound=self.recurrent_max_abs, recurrent_min_abs=self.recurrent_min_abs,
                                     bias=self.use_bias)
        bound = self._spec.input_weight_bound
        low, high = self._spec.recurrent_range(self._spec.runs()[0])
        self.kernel = self.add_weight(
            shape=(input_dim, self.units), name="kernel",
            initializer=self.kernel_initializer or keras.initializers.RandomUniform(-bound, bound, seed=self.seed),
            regularizer=self.kernel_regularizer, constraint=self.kernel_constraint)
        recurrent_seed = None if self.seed is None else self.seed + 1
        self.recurrent_kernel = self.add_weight(
            shape=(1, self.units), name="recurrent_kernel",
            initializer=self.recurrent_initializer or keras.initializers.RandomUniform(low, high, seed=recurrent_seed),
            regularizer=self.recurrent_regularizer, constraint=self.recurrent_constraint)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.units,), name="bias", initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer, constraint=self.bias_constraint)
        super().build(input_shape)

    def recurrence(self, x, h0, lengths=None):
        """The fused recurrence over an already projected ``x`` ``[B, T, units]`` from ``h0`` ``[B, units]``:
        ``(h [B, T, units], h_n [B, units])`` through the active backend's op (``lengths``: ``[B]`` integers or
        None). ``u`` is the recurrent kernel with ``recurrent_max_abs``/``recurrent_min_abs`` applied."""
        op = backend_op()
        dtype = keras.backend.standardize_dtype(x.dtype)
        run = "float64" if dtype == "float64" else "float32"  # the kernels' dtypes; half types compute in float32
        u = ops.reshape(ops.convert_to_tensor(self.recurrent_kernel), (self.units,))
        u = ops.cast(_bounded(ops.cast(u, run), self.recurrent_max_abs, self.recurrent_min_abs), run)
        b = ops.cast(ops.convert_to_tensor(self.bias), run) if self.use_bias else None
        h, h_n = op(ops.cast(x, run), u, b, ops.cast(h0, run), activation=self._spec.activation, batch_first=True,
                    lengths=lengths)
        return ops.cast(h, dtype), ops.cast(h_n, dtype)

    def call(self, inputs, states, training=False):
        h_prev = states[0] if isinstance(states, (list, tuple)) else states
        dp_mask = self.get_dropout_mask(inputs)
        rec_dp_mask = self.get_recurrent_dropout_mask(h_prev)
        if training and dp_mask is not None:
            inputs = inputs * dp_mask
        if training and rec_dp_mask is not None:
            h_prev = h_prev * rec_dp_mask  # u * (h_{t-1} * mask): Keras' recurrent dropout, through h0
        x = ops.expand_dims(_project(inputs, self.kernel), 1)
        _, h = self.recurrence(x, h_prev)
        return h, ([h] if isinstance(states, (list, tuple)) else h)

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.state_size), dtype=self.compute_dtype)]

    def get_config(self):
        ser = keras.initializers.serialize
        config = {
            "units": self.units,
            "activation": self._activation_name,
            "use_bias": self.use_bias,
            "kernel_initializer": ser(self.kernel_initializer) if self.kernel_initializer else None,
            "recurrent_initializer": ser(self.recurrent_initializer) if self.recurrent_initializer else None,
            "bias_initializer": ser(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": keras.regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": keras.constraints.serialize(self.recurrent_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "recurrent_init": list(self.recurrent_init),
            "recurrent_max_abs": self.recurrent_max_abs,
            "recurrent_min_abs": self.recurrent_min_abs,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}


_CELL_ARGS = ("units", "activation", "use_bias", "kernel_initializer", "recurrent_initializer", "bias_initializer",
              "kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "kernel_constraint",
              "recurrent_constraint", "bias_constraint", "dropout", "recurrent_dropout", "recurrent_init",
              "recurrent_max_abs", "recurrent_min_abs", "seed")


def _concrete(t):
    """``t`` as a NumPy array when its values exist now (eager), else None (traced by jax.jit or tf.function)."""
    name = keras.config.backend()
    if name == "jax":
        import jax

        if isinstance(t, jax.core.Tracer):
            return None
    elif name == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            return None
    return np.asarray(ops.convert_to_numpy(t))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class IndRNN(keras.layers.RNN):
    """Independently recurrent layer ``h_t = act(x_t @ kernel + u * h_{t-1} + bias)`` (Li et al., CVPR 2018),
    its loop one fused kernel call on the active Keras backend (torch, jax or tensorflow).

    Args:
        units: positive int, the number of units (features of the output and the state).
        activation: "relu" (default), "tanh", "sigmoid" or "linear"/None: the kernels' activations.
        use_bias: whether the layer has a bias.
        kernel_initializer: for ``kernel`` ``(input_dim, units)``; default ``U(-1/sqrt(units), 1/sqrt(units))``.
        recurrent_initializer: for ``recurrent_kernel`` ``(1, units)``; default ``U(*recurrent_init)``.
        bias_initializer: default "zeros".
        kernel_regularizer, recurrent_regularizer, bias_regularizer, activity_regularizer,
        kernel_constraint, recurrent_constraint, bias_constraint: as in Keras (on the ``(1, units)`` recurrent
            kernel, constraints act per unit: ``MaxNorm(c)`` bounds each ``|u_j|``).
        dropout: fraction of input features dropped, one mask per sequence.
        recurrent_dropout: fraction of state units dropped before ``u * h_{t-1}``, one mask per sequence; a
            training call with it steps the cell (see the module docstring).
        recurrent_init: ``(low, high)`` of the default recurrent init (:func:`indrnn_core.init.layer_ranges`
            gives the papers' ranges); default ``(0, 1)``.
        recurrent_max_abs, recurrent_min_abs: bounds on ``|u|`` applied in the forward pass (the TF IndRNN
            cell's arguments); None for none.
        return_sequences, return_state, go_backwards, stateful, unroll, zero_output_for_mask: as
            ``keras.layers.RNN`` (``unroll`` only affects the stepped ``recurrent_dropout`` path).
        seed: seed of the default initializers and the dropout masks.

    Call: ``layer(inputs [B, T, input_dim], initial_state=None, mask=None, training=None)``.
    """

    def __init__(self, units, activation="relu", use_bias=True, kernel_initializer=None, recurrent_initializer=None,
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
                 dropout=0.0, recurrent_dropout=0.0, recurrent_init=None, recurrent_max_abs=None,
                 recurrent_min_abs=None, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, zero_output_for_mask=False, seed=None, **kwargs):
        cell = IndRNNCell(
            units, activation=activation, use_bias=use_bias, kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer, kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint, dropout=dropout,
            recurrent_dropout=recurrent_dropout, recurrent_init=recurrent_init, recurrent_max_abs=recurrent_max_abs,
            recurrent_min_abs=recurrent_min_abs, seed=seed, dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True), name="indrnn_cell")
        super().__init__(cell, return_sequences=return_sequences, return_state=return_state,
                         go_backwards=go_backwards, stateful=stateful, unroll=unroll,
                         zero_output_for_mask=zero_output_for_mask, activity_regularizer=activity_regularizer,
                         **kwargs)
        self.input_spec = [keras.layers.InputSpec(ndim=3)]
        if keras.config.backend() == "tensorflow":
            self.supports_jit = False  # tf.py_function: XLA cannot compile it (Keras then compiles without XLA)

    def call(self, sequences, initial_state=None, mask=None, training=False):
        return super().call(sequences, mask=mask, training=training, initial_state=initial_state)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if training and self.cell.recurrent_dropout > 0:
            # A per-sample u (u * mask) the fused kernels cannot express: step the cell (one T=1 call per step).
            return super().inner_loop(sequences, initial_state, mask, training=training)
        h0 = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state
        return self._fused(sequences, h0, mask, training)

    def _fused(self, sequences, h0, mask, training):
        cell = self.cell
        if mask is not None:
            mask = self._check_mask(mask, sequences)
        if self.go_backwards:  # Keras' rule: process (and output) the reversed sequence
            sequences = ops.flip(sequences, axis=1)
            mask = None if mask is None else ops.flip(mask, axis=1)
        if training and cell.dropout > 0:
            dp_mask = cell.get_dropout_mask(sequences[:, 0, :])  # made by RNN.call: one mask per sequence
            sequences = sequences * ops.expand_dims(dp_mask, 1)
        x = _project(sequences, cell.kernel)
        if mask is None:
            h, h_n = cell.recurrence(x, h0)
            return h_n, h, [h_n]

        counts = ops.cumsum(ops.cast(mask, "int32"), axis=1)  # valid steps up to and including each step
        lengths = counts[:, -1]
        steps = ops.arange(ops.shape(x)[1], dtype="int32")
        concrete = _concrete(mask)
        right_padded = concrete is not None and bool(np.all(concrete == (np.arange(concrete.shape[1])
                                                                         < concrete.sum(1, keepdims=True))))
        if not right_padded:
            # Gather each sequence's valid steps to the front, in order: valid step t goes to counts[t]-1, masked
            # step t after all valid ones (lengths + t - counts[t]); the keys are distinct, so argsort is exact.
            keys = ops.where(mask, counts - 1, ops.expand_dims(lengths, 1) + ops.expand_dims(steps, 0) - counts)
            order = ops.argsort(keys, axis=1)
            x = ops.take_along_axis(x, self._expand_index(order, x), axis=1)
        h, h_n = cell.recurrence(x, h0, lengths=lengths)
        # Output at step t: the output of the last valid step at or before t (Keras' RNN convention), zeros
        # before the first one; only at valid steps with zero_output_for_mask.
        source = ops.maximum(counts - 1, 0)
        out = ops.take_along_axis(h, self._expand_index(source, h), axis=1)
        keep = mask if self.zero_output_for_mask else counts > 0
        out = ops.where(ops.expand_dims(keep, -1), out, ops.zeros_like(out))
        return out[:, -1], out, [h_n]

    @staticmethod
    def _expand_index(index, like):
        return ops.broadcast_to(ops.expand_dims(index, -1), ops.shape(like))

    @staticmethod
    def _check_mask(mask, sequences):
        expected = tuple(sequences.shape[:2])
        shape = tuple(mask.shape)
        if len(shape) != 2 or any(a is not None and b is not None and a != b for a, b in zip(shape, expected)):
            raise ValueError(f"mask must have shape (batch, timesteps) = {expected}, matching the input "
                             f"{tuple(sequences.shape)}, got {shape}")
        return ops.cast(mask, "bool")

    # The cell's arguments, read through the layer as keras.layers.SimpleRNN does.
    units = property(lambda self: self.cell.units)
    activation = property(lambda self: self.cell.activation)
    use_bias = property(lambda self: self.cell.use_bias)
    kernel_initializer = property(lambda self: self.cell.kernel_initializer)
    recurrent_initializer = property(lambda self: self.cell.recurrent_initializer)
    bias_initializer = property(lambda self: self.cell.bias_initializer)
    kernel_regularizer = property(lambda self: self.cell.kernel_regularizer)
    recurrent_regularizer = property(lambda self: self.cell.recurrent_regularizer)
    bias_regularizer = property(lambda self: self.cell.bias_regularizer)
    kernel_constraint = property(lambda self: self.cell.kernel_constraint)
    recurrent_constraint = property(lambda self: self.cell.recurrent_constraint)
    bias_constraint = property(lambda self: self.cell.bias_constraint)
    dropout = property(lambda self: self.cell.dropout)
    recurrent_dropout = property(lambda self: self.cell.recurrent_dropout)
    recurrent_init = property(lambda self: self.cell.recurrent_init)
    recurrent_max_abs = property(lambda self: self.cell.recurrent_max_abs)
    recurrent_min_abs = property(lambda self: self.cell.recurrent_min_abs)
    kernel = property(lambda self: self.cell.kernel)
    recurrent_kernel = property(lambda self: self.cell.recurrent_kernel)
    bias = property(lambda self: self.cell.bias)

    def get_config(self):
        cell_config = self.cell.get_config()
        config = {name: cell_config[name] for name in _CELL_ARGS}
        config["activity_regularizer"] = keras.regularizers.serialize(self.activity_regularizer)
        base = super().get_config()
        del base["cell"]
        return {**base, **config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
