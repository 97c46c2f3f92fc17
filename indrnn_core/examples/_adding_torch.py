"""PyTorch backend of ``indrnn-adding``: builds the IndRNN (or a comparison nn.LSTM), its optimiser, and the
train/test steps on the NumPy batches that ``adding.py`` generates.

A backend for another framework is a module with the same two functions, ``resolve_device`` and ``build``, whose
trainer has ``num_parameters``, ``get_state()`` / ``set_state(state)`` (picklable, for ``--resume``),
``set_lr(lr)``, ``train_step(x, y) -> float`` and ``test_mse(x, y) -> float``
(x ``[T, B, 2]``, y ``[B]``, NumPy float32).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from indrnn_core import init as core_init
from indrnn_core.adapters.torch import IndRNN, register_recurrent_clipping
from indrnn_core.examples import _common

EVAL_CHUNK = 250  # test sequences per forward pass: bounds the activation memory at long T


def resolve_device(parser: argparse.ArgumentParser, name: str) -> torch.device:
    return _common.torch_device(parser, name)


class _Regressor(nn.Module):
    """A recurrent stack read at its last step through Linear(1): ``[T, B, 2] -> [B]``."""

    def __init__(self, rnn: nn.Module, hidden: int) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[-1]).squeeze(-1)


def make_indrnn(config) -> nn.Module:
    """The paper's adding-problem IndRNN: hidden layers u ~ U(0, b), the last u ~ U(1/b, b), |u| <= b with
    b = magnitude^(1/T); input weights ~ N(0, std=input_std)."""
    bound = core_init.recurrent_bound(config.seq_len, magnitude=config.magnitude)
    ranges = [core_init.hidden_range(bound)] * (config.layers - 1) + [core_init.last_layer_range(bound)]
    rnn = IndRNN(2, config.hidden, num_layers=config.layers, recurrent_init=ranges, recurrent_bound=bound)
    with torch.no_grad():
        for name, param in rnn.named_parameters():
            if name.startswith("weight_ih"):
                param.normal_(0.0, config.input_std)
    return rnn


class Trainer:
    """One model, its Adam optimiser and its train/test steps."""

    def __init__(self, kind: str, config, device: torch.device) -> None:
        torch.manual_seed(config.seed)  # each model's init depends on the seed only, not on what else runs
        if kind == "indrnn":
            rnn = make_indrnn(config)
        elif kind == "lstm":
            rnn = nn.LSTM(2, config.hidden, num_layers=config.layers)
        else:
            raise ValueError(f"unknown model {kind!r}; expected 'indrnn' or 'lstm'")
        self.device = device
        self.model = _Regressor(rnn, config.hidden).to(device)
        self.params = list(self.model.parameters())
        self.num_parameters = sum(p.numel() for p in self.params)
        self.grad_clip = config.grad_clip
        self.optimizer = torch.optim.Adam(self.params, lr=config.lr)
        if kind == "indrnn":
            register_recurrent_clipping(self.optimizer, self.model.rnn)

    def get_state(self) -> dict:
        """The model's and the optimiser's state on the CPU, picklable (for ``--resume``, on any device)."""
        return _to_cpu({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()})

    def set_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # moves the moments onto the parameters' device

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _tensors(self, x: np.ndarray, y: np.ndarray):
        return torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        x, y = self._tensors(x, y)
        self.model.train()
        loss = nn.functional.mse_loss(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        return loss.item()

    @torch.no_grad()
    def test_mse(self, x: np.ndarray, y: np.ndarray) -> float:
        self.model.eval()
        total = 0.0
        for start in range(0, x.shape[1], EVAL_CHUNK):
            xc, yc = self._tensors(np.ascontiguousarray(x[:, start:start + EVAL_CHUNK]), y[start:start + EVAL_CHUNK])
            total += nn.functional.mse_loss(self.model(xc), yc, reduction="sum").item()
        return total / x.shape[1]


def _to_cpu(tree):
    """``tree`` with every tensor detached and copied to the CPU (dicts, lists and tuples walked)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {k: _to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_cpu(v) for v in tree)
    return tree


def build(kind: str, config, device: torch.device) -> Trainer:
    return Trainer(kind, config, device)
