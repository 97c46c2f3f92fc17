"""JAX backend of ``indrnn-adding`` (Flax ``nnx`` + optax): the same model, recipe and trainer interface as
``_adding_torch`` (``num_parameters``, ``set_lr(lr)``, ``train_step(x, y) -> float``, ``test_mse(x, y) -> float`` on
the NumPy batches ``adding.py`` generates), written as a Flax user would: an ``nnx.Module``, an ``nnx.Optimizer``
over ``optax.chain(clip_by_global_norm, adam)`` and one ``nnx.jit``-ed step that updates and then clips ``u``.

``--compare lstm`` trains two stacked ``nnx.RNN(nnx.LSTMCell)`` layers of the same width (Flax's own LSTM and its
default init) on the same batches.
"""
from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from indrnn_core import init as core_init
from indrnn_core.adapters.flax import IndRNN, clip_recurrent_weights

EVAL_CHUNK = 250  # test sequences per forward pass: bounds the activation memory at long T


def resolve_device(parser: argparse.ArgumentParser, name: str) -> jax.Device:
    """--device for JAX: 'auto' (JAX's default device: a GPU when jaxlib has one), 'cpu', 'cuda' or 'cuda:N' (also
    'gpu', 'gpu:N'); a one-line error otherwise."""
    if name == "auto":
        return jax.devices()[0]
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda", "gpu") or (index and not index.isdigit()):
        parser.error(f"argument --device: pass 'cpu', 'cuda', 'cuda:N' or 'auto', got {name!r}")
    platform = "cpu" if kind == "cpu" else "gpu"
    try:
        devices = jax.devices(platform)
    except RuntimeError:
        parser.error(f"argument --device: {name!r} asked for CUDA but JAX sees no GPU here (a CUDA jaxlib is "
                     "needed: pip install 'jax[cuda12]'); pass --device cpu")
    number = int(index or 0)
    if number >= len(devices):
        parser.error(f"argument --device: {name!r} does not exist ({len(devices)} {platform} device(s) visible)")
    return devices[number]


def _uniform(bound: float):
    """``U(-bound, bound)``: torch's ``nn.Linear`` default init, used for the head so both backends start alike."""
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def make_indrnn(config, rngs: nnx.Rngs) -> IndRNN:
    """The paper's adding-problem IndRNN (as ``_adding_torch.make_indrnn``): hidden layers u ~ U(0, b), the last
    u ~ U(1/b, b), |u| <= b with b = magnitude^(1/T); input weights ~ N(0, std=input_std). Time-major input."""
    bound = core_init.recurrent_bound(config.seq_len, magnitude=config.magnitude)
    return IndRNN(2, config.hidden, config.layers, time_major=True, recurrent_bound=bound,
                  recurrent_init=core_init.layer_ranges(config.layers, bound),
                  kernel_init=nnx.initializers.normal(config.input_std), rngs=rngs)


class _LSTM(nnx.Module):
    """Stacked Flax LSTMs, ``[T, B, in] -> ([T, B, H], None)`` like the IndRNN."""

    def __init__(self, hidden: int, layers: int, rngs: nnx.Rngs) -> None:
        self.layers = nnx.List([nnx.RNN(nnx.LSTMCell(2 if k == 0 else hidden, hidden, rngs=rngs), time_major=True)
                                for k in range(layers)])

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x, None


class _Regressor(nnx.Module):
    """A recurrent stack read at its last step through Linear(1): ``[T, B, 2] -> [B]``."""

    def __init__(self, rnn: nnx.Module, hidden: int, rngs: nnx.Rngs) -> None:
        self.rnn = rnn
        bound = 1.0 / math.sqrt(hidden)
        self.head = nnx.Linear(hidden, 1, kernel_init=_uniform(bound), bias_init=_uniform(bound), rngs=rngs)

    def __call__(self, x):
        out, _ = self.rnn(x)
        return self.head(out[-1])[:, 0]


@nnx.jit
def _train_step(model, optimizer, x, y, lr):
    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.opt_state[1].hyperparams["learning_rate"][...] = lr
    optimizer.update(model, grads)
    clip_recurrent_weights(model)  # |u| <= 2^(1/T) after every step, as the paper (a no-op for the LSTM)
    return loss


@nnx.jit
def _squared_error(model, x, y):
    return jnp.sum((model(x) - y) ** 2)


class Trainer:
    """One model, its optimiser (gradient-norm clipping then Adam with a settable learning rate) and its steps."""

    def __init__(self, kind: str, config, device: jax.Device) -> None:
        self.device = device
        rngs = nnx.Rngs(config.seed)  # each model's init depends on the seed only, not on what else runs
        with jax.default_device(device):
            if kind == "indrnn":
                rnn = make_indrnn(config, rngs)
            elif kind == "lstm":
                rnn = _LSTM(config.hidden, config.layers, rngs)
            else:
                raise ValueError(f"unknown model {kind!r}; expected 'indrnn' or 'lstm'")
            self.model = _Regressor(rnn, config.hidden, rngs)
            tx = optax.chain(optax.clip_by_global_norm(config.grad_clip),
                             optax.inject_hyperparams(optax.adam)(learning_rate=config.lr))
            self.optimizer = nnx.Optimizer(self.model, tx, wrt=nnx.Param)
            clip_recurrent_weights(self.model)  # the constraint holds from the start
        # Commit every parameter and optimiser array to the device, as the step's outputs will be: otherwise the
        # second step sees other input shardings than the first and XLA compiles the step twice.
        nnx.update((self.model, self.optimizer),
                   jax.device_put(nnx.state((self.model, self.optimizer)), device))
        self.num_parameters = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(self.model, nnx.Param)))
        self.lr = config.lr

    def get_state(self) -> dict:
        """Parameters, optimiser state and RNG keys as nested dicts of NumPy arrays (picklable, for
        ``--resume``; a key as its raw data, which NumPy can hold)."""
        return jax.tree.map(_to_numpy, nnx.to_pure_dict(nnx.state((self.model, self.optimizer))))

    def set_state(self, state: dict) -> None:
        current = nnx.state((self.model, self.optimizer))
        like = nnx.to_pure_dict(current)
        nnx.replace_by_pure_dict(current, jax.tree.map(_from_numpy, state, like))
        nnx.update((self.model, self.optimizer), jax.device_put(current, self.device))

    def set_lr(self, lr: float) -> None:
        self.lr = lr

    def _arrays(self, x: np.ndarray, y: np.ndarray):
        return jax.device_put(x, self.device), jax.device_put(y, self.device)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        x, y = self._arrays(x, y)
        with jax.default_device(self.device):
            lr = jnp.asarray(self.lr, jnp.float32)
            return float(_train_step(self.model, self.optimizer, x, y, lr))

    def test_mse(self, x: np.ndarray, y: np.ndarray) -> float:
        total = 0.0
        for start in range(0, x.shape[1], EVAL_CHUNK):
            xc, yc = self._arrays(np.ascontiguousarray(x[:, start:start + EVAL_CHUNK]), y[start:start + EVAL_CHUNK])
            total += float(_squared_error(self.model, xc, yc))
        return total / x.shape[1]


def _is_key(leaf) -> bool:
    return jnp.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


def _to_numpy(leaf):
    return np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)


def _from_numpy(value, like):
    return jax.random.wrap_key_data(value, impl=jax.random.key_impl(like)) if _is_key(like) else value


def build(kind: str, config, device: jax.Device) -> Trainer:
    return Trainer(kind, config, device)
