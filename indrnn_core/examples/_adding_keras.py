"""Keras 3 backend of ``indrnn-adding`` (torch, jax or tensorflow underneath, from ``KERAS_BACKEND``): the same model,
recipe and trainer interface as ``_adding_torch`` (``num_parameters``, ``set_lr(lr)``, ``train_step(x, y) -> float``,
``test_mse(x, y) -> float`` on the NumPy batches ``adding.py`` generates), written as a Keras user would: a
``Sequential`` of two ``IndRNN`` layers and a ``Dense(1)`` head, ``Adam(global_clipnorm=...)``, ``train_on_batch``,
and the ``|u|`` bound kept by a ``RecurrentClip`` constraint (Keras applies constraints after every optimiser step).

``--compare lstm`` trains two stacked ``keras.layers.LSTM`` layers of the same width (Keras' default init).
"""
from __future__ import annotations

import argparse
import contextlib
import math

import keras
import numpy as np

from indrnn_core import init as core_init
from indrnn_core.adapters.keras import IndRNN, RecurrentClip

EVAL_CHUNK = 250  # test sequences per forward pass: bounds the activation memory at long T


def _has_gpu() -> bool:
    name = keras.config.backend()
    if name == "torch":
        import torch

        return torch.cuda.is_available()
    if name == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve_device(parser: argparse.ArgumentParser, name: str) -> str:
    """--device for Keras: 'auto' (the backend's default device), 'cpu', 'cuda'/'gpu' or 'cuda:N'/'gpu:N'; the
    Keras backend itself comes from KERAS_BACKEND."""
    kind, _, index = name.partition(":")
    if name == "auto":
        return "auto"
    if kind not in ("cpu", "cuda", "gpu") or (index and not index.isdigit()):
        parser.error(f"argument --device: pass 'cpu', 'cuda', 'cuda:N' or 'auto', got {name!r}")
    if kind == "cpu":
        return "cpu"
    if not _has_gpu():
        parser.error(f"argument --device: {name!r} asked for a GPU but Keras' {keras.config.backend()} backend sees "
                     "none here; pass --device cpu")
    return f"gpu:{index or 0}"


def _uniform(bound: float):
    """``U(-bound, bound)``: torch's ``nn.Linear`` default init, used for the head so all backends start alike."""
    return keras.initializers.RandomUniform(-bound, bound)


def make_indrnn(config) -> list:
    """The paper's adding-problem IndRNN layers (as ``_adding_torch.make_indrnn``): hidden layers u ~ U(0, b), the
    last u ~ U(1/b, b), |u| <= b after every step with b = magnitude^(1/T); input weights ~ N(0, std=input_std)."""
    bound = core_init.recurrent_bound(config.seq_len, magnitude=config.magnitude)
    ranges = core_init.layer_ranges(config.layers, bound)
    return [IndRNN(config.hidden, recurrent_init=ranges[k], recurrent_constraint=RecurrentClip(bound),
                   kernel_initializer=keras.initializers.RandomNormal(0.0, config.input_std),
                   return_sequences=k < config.layers - 1)
            for k in range(config.layers)]


class Trainer:
    """One Keras model, compiled with Adam (global gradient-norm clipping) and trained by ``train_on_batch``."""

    def __init__(self, kind: str, config, device: str) -> None:
        keras.utils.set_random_seed(config.seed)  # each model's init depends on the seed only
        self.device = device
        with self._on_device():
            if kind == "indrnn":
                rnn = make_indrnn(config)
            elif kind == "lstm":
                rnn = [keras.layers.LSTM(config.hidden, return_sequences=k < config.layers - 1)
                       for k in range(config.layers)]
            else:
                raise ValueError(f"unknown model {kind!r}; expected 'indrnn' or 'lstm'")
            bound = 1.0 / math.sqrt(config.hidden)
            head = keras.layers.Dense(1, kernel_initializer=_uniform(bound), bias_initializer=_uniform(bound))
            self.model = keras.Sequential([keras.Input((config.seq_len, 2)), *rnn, head])
            self.model.compile(keras.optimizers.Adam(config.lr, global_clipnorm=config.grad_clip), "mse")
        self.num_parameters = self.model.count_params()

    def _on_device(self):
        return contextlib.nullcontext() if self.device == "auto" else keras.device(self.device)

    def get_state(self) -> dict:
        """Weights and optimiser variables as NumPy arrays (picklable, for ``--resume``)."""
        optimizer = self.model.optimizer
        return {"weights": self.model.get_weights(),
                "optimizer": [keras.ops.convert_to_numpy(v) for v in optimizer.variables]}

    def set_state(self, state: dict) -> None:
        self.model.set_weights(state["weights"])
        optimizer = self.model.optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        for variable, value in zip(optimizer.variables, state["optimizer"], strict=True):
            variable.assign(value)

    def set_lr(self, lr: float) -> None:
        self.model.optimizer.learning_rate.assign(lr)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        with self._on_device():
            loss = self.model.train_on_batch(np.ascontiguousarray(x.transpose(1, 0, 2)), y[:, None])
        return float(loss)

    def test_mse(self, x: np.ndarray, y: np.ndarray) -> float:
        total = 0.0
        with self._on_device():
            for start in range(0, x.shape[1], EVAL_CHUNK):
                xc = np.ascontiguousarray(x[:, start:start + EVAL_CHUNK].transpose(1, 0, 2))
                pred = self.model.predict_on_batch(xc)
                total += float(np.sum((np.asarray(keras.ops.convert_to_numpy(pred))[:, 0]
                                       - y[start:start + EVAL_CHUNK]) ** 2))
        return total / x.shape[1]


def build(kind: str, config, device: str) -> Trainer:
    return Trainer(kind, config, device)
