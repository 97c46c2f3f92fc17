"""PyTorch pieces shared by the classification examples (digits, vowels, mnist): the paper's stacked IndRNN
classifier, optimiser parameter groups, and an epoch loop with a progress bar that records accuracy."""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from indrnn_core import init as core_init
from indrnn_core.adapters.torch import BatchNormOverTime, IndRNN, SequenceDropout
from indrnn_core.examples import _common

Batch = tuple[Union[Tensor, PackedSequence], Tensor]


def recurrent_ranges(layers: int, bound: float) -> list[tuple[float, float]]:
    """The paper's init of u: hidden layers U(0, bound), the last layer (read at the final step) U(1/bound, bound)."""
    return [core_init.hidden_range(bound)] * (layers - 1) + [core_init.last_layer_range(bound)]


class StackedIndRNNClassifier(nn.Module):
    """The paper's plain deep IndRNN for sequence classification, ``[T, B, in] -> [B, classes]``: per layer
    ``Linear -> IndRNN recurrence (ReLU) -> BN over time -> dropout shared over time``, then Linear(classes) on the
    last step. u starts as :func:`recurrent_ranges` and is kept in ``[-bound, bound]`` with
    ``bound = magnitude^(1/seq_len)`` (call ``register_recurrent_clipping`` on the optimiser)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, num_classes: int, seq_len: int, *,
                 magnitude: float = 5.0, batch_norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        bound = core_init.recurrent_bound(seq_len, magnitude=magnitude)
        layers = []
        for i, rng in enumerate(recurrent_ranges(num_layers, bound)):
            layers.append(IndRNN(input_size if i == 0 else hidden_size, hidden_size, recurrent_init=rng,
                                 recurrent_bound=bound))
            layers.append(BatchNormOverTime(hidden_size) if batch_norm else nn.Identity())
            layers.append(SequenceDropout(dropout) if dropout > 0 else nn.Identity())
        self.layers = nn.ModuleList(layers)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)[0] if isinstance(layer, IndRNN) else layer(x)
        return self.classifier(x[-1])


def adam(model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with weight decay on matrices only: the paper decays neither u nor biases (nor BN parameters); all of
    them are vectors."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.Adam([{"params": decay, "weight_decay": weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=lr)


def minibatches(x: Tensor, y: Tensor, batch_size: int, generator: Optional[torch.Generator] = None
                ) -> Iterable[tuple[Tensor, Tensor]]:
    """Batch-major tensors in (shuffled when ``generator`` is given) mini-batches."""
    order = torch.randperm(len(x), generator=generator) if generator is not None else torch.arange(len(x))
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, batches: Iterable[Batch], max_batches: int = 50) -> None:
    """Replace the running statistics of every batch norm in ``model`` by their average over ``batches`` under the
    current weights ("precise BN", Wu & Johnson 2021).

    Why: after a ReLU IndRNN many units fire rarely, so per-batch statistics swing from batch to batch and the usual
    exponential running average, trailing the moving weights, can differ badly from them; evaluation then drops far
    below the training-mode accuracy (seen on the digits: 60-80% in eval mode vs 87% in train mode)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    model.eval()  # dropout off
    saved = []
    for bn in norms:
        saved.append(bn.momentum)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
        bn.train()
    for i, (inputs, _) in enumerate(batches):
        if i == max_batches:
            break
        model(inputs)
    for bn, momentum in zip(norms, saved, strict=True):
        bn.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable[Batch]) -> float:
    model.eval()
    correct = total = 0
    for inputs, targets in batches:
        correct += (model(inputs).argmax(-1) == targets).sum().item()
        total += len(targets)
    return correct / max(total, 1)


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, train_batches: Callable[[], Iterable[Batch]],
        eval_batches: Mapping[str, Callable[[], Iterable[Batch]]], *, epochs: int, grad_clip: float,
        steps_per_epoch: int, desc: str, quiet: bool = False, select_on: Optional[str] = None,
        on_epoch: Optional[Callable[[float], None]] = None) -> tuple[list[dict], dict]:
    """Train for ``epochs``; after each epoch measure the accuracy on every ``eval_batches`` set.

    Returns (history, best): ``history`` holds one dict per epoch (``epoch``, ``train_loss``, ``<name>_acc`` for each
    set, ``seconds``); ``best`` is the history entry with the highest ``<select_on>_acc`` (the last epoch when
    ``select_on`` is None), and the model is left with the weights of that epoch. ``on_epoch(score)`` is called
    after each epoch (e.g. a learning-rate scheduler's step)."""
    import time

    history: list[dict] = []
    best, best_state = None, None
    start = time.perf_counter()
    bar = _common.progress(epochs * steps_per_epoch, desc, quiet)
    for epoch in range(1, epochs + 1):
        model.train()
        losses = []
        for inputs, targets in train_batches():
            loss = nn.functional.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix({"epoch": epoch, "loss": f"{np.mean(losses[-20:]):.4f}"}, refresh=False)
            bar.update(1)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        recalibrate_batch_norm(model, train_batches())
        for name, batches in eval_batches.items():
            record[f"{name}_acc"] = accuracy(model, batches())
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        bar.set_postfix({"epoch": epoch, "loss": f"{record['train_loss']:.4f}",
                         **{k: f"{v:.4f}" for k, v in record.items() if k.endswith("_acc")}}, refresh=True)
        key = f"{select_on}_acc" if select_on else None
        if best is None or key is None or record[key] > best[key]:
            best, best_state = record, copy.deepcopy(model.state_dict()) if key else None
        if on_epoch is not None:
            on_epoch(record[key] if key else record["train_loss"])
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return history, best


def save_history(out_dir: str, name: str, history: list[dict], title: str) -> tuple[str, str]:
    """Write ``<name>.csv`` (one row per epoch) and ``<name>.png`` (accuracy per epoch per evaluated set)."""
    import os

    keys = list(history[0])
    csv_path = _common.write_csv(os.path.join(out_dir, f"{name}.csv"), keys,
                                 ([f"{r[k]:.6g}" if isinstance(r[k], float) else r[k] for k in keys]
                                  for r in history))
    epochs = [r["epoch"] for r in history]
    curves = {k[:-4]: (epochs, [r[k] for r in history]) for k in keys if k.endswith("_acc")}
    png_path = _common.plot_curves(os.path.join(out_dir, f"{name}.png"), curves, xlabel="epoch",
                                   ylabel="accuracy", title=title)
    return csv_path, png_path


def summary_line(acc: float, epochs: int, seconds: float) -> str:
    """The last line every classification example prints."""
    return f"test_acc={acc:.4f} epochs={epochs} seconds={seconds:.1f}"
