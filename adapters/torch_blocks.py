"""Deep IndRNN building blocks (Li et al., arXiv:1910.06251) over :class:`IndRNNRecurrence`.

The blocks take time-major ``[T, B, C]`` tensors, or ``[B, T, C]`` with ``batch_first=True``, and optional
``lengths`` ([B] ints, as for :class:`IndRNN`): steps past a sequence's end are then left out of the batch-norm
statistics, never read by the recurrences, and zero in the outputs. Re-exported by ``indrnn_core.adapters.torch``.

Example::

    >>> from indrnn_core.adapters.torch import ResidualIndRNN
    >>> net = ResidualIndRNN(1, 32, num_blocks=2, dropout=0.1)
    >>> net(torch.randn(784, 8, 1)).shape                    # [T, B, in] -> [T, B, H]
    torch.Size([784, 8, 32])
"""
from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor, nn

from indrnn_core import init
from indrnn_core.adapters.torch import IndRNNRecurrence

__all__ = ["BatchNormOverTime", "BatchNormPerStep", "SequenceDropout", "ResidualIndRNN", "DenseIndRNN"]


def _valid_steps(input: Tensor, lengths, batch_first: bool) -> Tensor:
    """[T, B] (or [B, T]) bool mask of the steps inside each sequence."""
    lengths = torch.as_tensor(lengths, device=input.device)
    T, B = (input.shape[1], input.shape[0]) if batch_first else (input.shape[0], input.shape[1])
    if lengths.shape != (B,) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be {B} integers (one per sequence), got {tuple(lengths.shape)} "
                         f"{lengths.dtype}")
    if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(f"lengths must lie in [0, {T}] (T={T})")
    steps = torch.arange(T, device=input.device)
    return steps[None, :] < lengths[:, None] if batch_first else steps[:, None] < lengths[None, :]


def _as_int(value) -> Optional[int]:
    """``value`` as an int if it is an integer (a NumPy or 0-d torch integer too; not a bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


class BatchNormOverTime(nn.BatchNorm1d):
    """Batch norm with statistics pooled over time and batch (``T x B`` samples per feature), for classification.
    Input and output ``[T, B, C]`` (or ``[B, T, C]``: the pooling is the same). With ``lengths`` ([B]) only the
    steps inside each sequence count (say which layout with ``batch_first``); padding comes out as zeros."""

    def forward(self, input: Tensor, lengths=None, batch_first: bool = False) -> Tensor:
        if input.dim() != 3 or input.shape[-1] != self.num_features:
            raise ValueError(f"input must have shape [T, B, {self.num_features}], got {tuple(input.shape)}")
        if lengths is None:
            return super().forward(input.reshape(-1, self.num_features)).view(input.shape)
        valid = _valid_steps(input, lengths, batch_first)
        out = input.new_zeros(input.shape)
        out[valid] = super().forward(input[valid])
        return out


class BatchNormPerStep(nn.Module):
    """"BN_T": per-time-step running statistics, indexed by absolute step, with affine parameters shared over time
    (language modelling with states carried across batches). ``forward(input [T, B, C], start=0)`` normalises step
    ``t`` of the input with the statistics of absolute step ``start + t``; steps at or past ``max_steps`` use (and
    in training update, in step order) the last row, ``max_steps - 1``, as the authors' per-step batch norm does, so
    a model evaluated on ever-longer streams keeps running.

    ``momentum``: the running statistics' update factor, or None for a cumulative average of every batch statistic
    a row has seen, as in ``torch.nn`` batch norms (``num_batches_tracked`` counts them per row).
    """

    def __init__(self, num_features: int, max_steps: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be None (cumulative average) or in [0, 1], got {momentum!r}")
        if _as_int(max_steps) is None or max_steps < 1:
            raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
        max_steps = _as_int(max_steps)
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.max_steps, self.eps, self.momentum = num_features, max_steps, eps, momentum
        self.weight = nn.Parameter(torch.empty(num_features, **factory)) if affine else None
        self.bias = nn.Parameter(torch.empty(num_features, **factory)) if affine else None
        self.register_buffer("running_mean", torch.empty(max_steps, num_features, **factory))
        self.register_buffer("running_var", torch.empty(max_steps, num_features, **factory))
        self.register_buffer("num_batches_tracked", torch.zeros(max_steps, dtype=torch.long, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.running_mean)
        nn.init.ones_(self.running_var)
        self.num_batches_tracked.zero_()
        if self.weight is not None:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # State saved before num_batches_tracked existed: start counting from zero.
        state_dict.setdefault(prefix + "num_batches_tracked", torch.zeros_like(self.num_batches_tracked))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.num_features}, max_steps={self.max_steps}, eps={self.eps}, momentum={self.momentum}"

    def forward(self, input: Tensor, start: int = 0) -> Tensor:
        if input.dim() != 3 or input.shape[-1] != self.num_features:
            raise ValueError(f"input must have shape [T, B, {self.num_features}], got {tuple(input.shape)}")
        if _as_int(start) is None or start < 0:
            raise ValueError(f"start must be an int >= 0 (the absolute step of input[0]), got {start!r}")
        start = _as_int(start)
        steps, last = input.shape[0], self.max_steps - 1
        inside = max(0, min(steps, self.max_steps - start))  # steps [0, inside) have rows of their own
        if self.training:
            mean = input.mean(1)
            var = input.var(1, unbiased=False)
            with torch.no_grad():
                n = input.shape[1]
                self._update(start, inside, mean, var * (n / max(n - 1, 1)))
        elif inside == steps:
            mean, var = self.running_mean[start:start + steps], self.running_var[start:start + steps]
        else:
            rows = torch.arange(start, start + steps, device=input.device).clamp_(max=last)
            mean, var = self.running_mean[rows], self.running_var[rows]
        out = (input - mean.unsqueeze(1)) * torch.rsqrt(var.unsqueeze(1) + self.eps)
        return out * self.weight + self.bias if self.weight is not None else out

    def _update(self, start: int, inside: int, mean: Tensor, var: Tensor) -> None:
        """Fold this batch's per-step statistics into the running ones: one each into the rows of the steps inside
        the table, then those of the steps past it, in step order, into the last row."""
        rows, steps = slice(start, start + inside), mean.shape[0]
        counts = self.num_batches_tracked
        if inside:
            counts[rows] += 1
            factor = (1.0 / counts[rows].to(mean.dtype))[:, None] if self.momentum is None else self.momentum
            self.running_mean[rows] += (mean[:inside] - self.running_mean[rows]) * factor
            self.running_var[rows] += (var[:inside] - self.running_var[rows]) * factor
        if inside < steps:  # (a Python loop: only a training batch that runs past the table comes here)
            seen = int(counts[-1])
            for t in range(inside, steps):
                seen += 1
                factor = 1.0 / seen if self.momentum is None else self.momentum
                self.running_mean[-1] += (mean[t] - self.running_mean[-1]) * factor
                self.running_var[-1] += (var[t] - self.running_var[-1]) * factor
            counts[-1] = seen


class SequenceDropout(nn.Module):
    """Dropout with one mask per sequence, shared over all time steps. Input ``[T, B, C]`` (``[B, T, C]`` with
    batch_first)."""

    def __init__(self, p: float = 0.5, batch_first: bool = False) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"p must be in [0, 1), got {p!r}")
        self.p, self.batch_first = float(p), batch_first

    def extra_repr(self) -> str:
        return f"p={self.p}" + (", batch_first=True" if self.batch_first else "")

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return input
        shape = list(input.shape)
        shape[1 if self.batch_first else 0] = 1
        mask = torch.empty(shape, dtype=input.dtype, device=input.device).bernoulli_(1 - self.p)
        return input * mask / (1 - self.p)


_BN_LOCATIONS = ("before", "after")


def _check_bn_location(bn_location: str) -> bool:
    """Whether batch norm comes before the recurrence (a ValueError for anything but "before"/"after")."""
    if bn_location not in _BN_LOCATIONS:
        raise ValueError(f"bn_location must be 'before' or 'after' (batch norm before or after each recurrence), "
                         f"got {bn_location!r}")
    return bn_location == "before"


def _recurrence(features: int, activation: str, recurrent_init, recurrent_bound, recurrent_min_abs,
                batch_first: bool) -> IndRNNRecurrence:
    # No bias: like the authors' recurrences, each one follows a Linear (or, with batch norm before it, a batch
    # norm) whose bias already shifts its input; a second one would be a redundant parameter.
    return IndRNNRecurrence(features, bias=False, activation=activation, recurrent_init=recurrent_init,
                            recurrent_bound=recurrent_bound, recurrent_min_abs=recurrent_min_abs,
                            batch_first=batch_first)


def _init_last_recurrence(recurrence: IndRNNRecurrence, last_recurrent_init) -> None:
    """The final recurrence's own init range (e.g. ``init.last_layer_range(bound)`` for long memory)."""
    if last_recurrent_init is not None:
        recurrence.recurrent_range = init.resolve_ranges(last_recurrent_init, 1)[0]
        recurrence.reset_parameters()


class _RecurrenceWithNorm(nn.Module):
    """Batch norm over time before or after a recurrence (the authors' ``IndRNNwithBN``)."""

    def __init__(self, features: int, bn_before: bool, **rec) -> None:
        super().__init__()
        self.bn_before, self.batch_first = bn_before, rec["batch_first"]
        self.recurrence = _recurrence(features, **rec)
        self.norm = BatchNormOverTime(features)

    def forward(self, x: Tensor, lengths=None) -> Tensor:
        if self.bn_before:
            x = self.norm(x, lengths, self.batch_first)
        y = self.recurrence(x, lengths=lengths)[0]
        return y if self.bn_before else self.norm(y, lengths, self.batch_first)


class _Layer(nn.Module):
    """Linear -> IndRNN recurrence with batch norm over time before or after it -> sequence dropout: one layer of
    the dense network."""

    def __init__(self, in_features: int, out_features: int, dropout: float, bn_before: bool, **rec) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.recurrence = _RecurrenceWithNorm(out_features, bn_before, **rec)
        self.drop = SequenceDropout(dropout, batch_first=rec["batch_first"])

    def forward(self, x: Tensor, lengths=None) -> Tensor:
        return self.drop(self.recurrence(self.linear(x), lengths))


class _ResidualBlock(nn.Module):
    """Pre-activation residual block: ``x + ([IndRNN with BN -> dropout -> Linear] x 2)(x)``."""

    def __init__(self, features: int, dropout: float, bn_before: bool, **rec) -> None:
        super().__init__()
        self.recurrences = nn.ModuleList(_RecurrenceWithNorm(features, bn_before, **rec) for _ in range(2))
        self.drop = SequenceDropout(dropout, batch_first=rec["batch_first"])
        self.linears = nn.ModuleList(nn.Linear(features, features) for _ in range(2))

    def forward(self, x: Tensor, lengths=None) -> Tensor:
        y = x
        for recurrence, linear in zip(self.recurrences, self.linears):
            y = linear(self.drop(recurrence(y, lengths)))
        return x + y


class ResidualIndRNN(nn.Module):
    """Residual IndRNN (pre-activation, the authors' ``ResidualNet``): an input Linear, ``num_blocks`` residual
    blocks of ``[IndRNN with BN -> dropout -> Linear] x 2`` plus identity, then a final IndRNN with BN.

    ``bn_location``: batch norm (over time) "before" or "after" each recurrence. The authors' pixel-MNIST and
    skeleton recipes use "after" (their recommendation for classification), the language model "before". With
    "before" the final recurrence's output is not normalised, so ``output_norm`` (default True with "before"; the
    language model's ``extra_bn``) adds a batch norm after it; ``output_norm=False`` gives the pixel-MNIST network's
    "before" variant exactly. ``final_dropout``: sequence dropout on the output (the authors' ``droplast``, at the
    blocks' rate in the pixel-MNIST network). The recurrences have no bias of their own: each follows a Linear (the
    projection or a block's, through the residual sum) or a batch norm that has one.

    ``recurrent_init``/``recurrent_bound``/``recurrent_min_abs`` apply to every recurrence (see :class:`IndRNN`);
    ``last_recurrent_init`` replaces ``recurrent_init`` for the final one, e.g. ``init.last_layer_range(bound)``
    (the authors' ``u_lastlayer_ini``) when a classifier reads only the last step.

    ``forward(input [T, B, input_size], lengths=None) -> [T, B, hidden_size]`` (``[B, T, ...]`` with
    ``batch_first``); put a classifier on the last step (``out[-1]``, or each sequence's last valid step).

    Example (the authors' pixel-MNIST residual network, 170,890 parameters with its classifier)::

        >>> bound = init.recurrent_bound(784, 5.0)
        >>> net = ResidualIndRNN(1, 128, num_blocks=5, dropout=0.1, bn_location="after", final_dropout=0.1,
        ...                      recurrent_init=init.hidden_range(bound), recurrent_bound=bound,
        ...                      last_recurrent_init=init.last_layer_range(bound))
        >>> classifier = nn.Linear(128, 10)
    """

    def __init__(self, input_size: int, hidden_size: int, num_blocks: int = 2, dropout: float = 0.0,
                 activation: str = "relu", recurrent_init=None, recurrent_bound: Optional[float] = None,
                 batch_first: bool = False, *, bn_location: str = "before", output_norm: Optional[bool] = None,
                 final_dropout: float = 0.0, last_recurrent_init=None,
                 recurrent_min_abs: Optional[float] = None) -> None:
        super().__init__()
        bn_before = _check_bn_location(bn_location)
        if output_norm is None:
            output_norm = bn_before
        if output_norm and not bn_before:
            raise ValueError("output_norm is for bn_location='before' (with 'after' the final batch norm already "
                             "follows the last recurrence)")
        rec = {"activation": activation, "recurrent_init": recurrent_init, "recurrent_bound": recurrent_bound,
               "recurrent_min_abs": recurrent_min_abs, "batch_first": batch_first}
        self.input_size, self.hidden_size, self.batch_first = input_size, hidden_size, batch_first
        self.bn_location = bn_location
        self.projection = nn.Linear(input_size, hidden_size)
        self.blocks = nn.ModuleList(_ResidualBlock(hidden_size, dropout, bn_before, **rec)
                                    for _ in range(num_blocks))
        self.final = _RecurrenceWithNorm(hidden_size, bn_before, **rec)
        _init_last_recurrence(self.final.recurrence, last_recurrent_init)
        self.output_norm = BatchNormOverTime(hidden_size) if output_norm else None
        self.final_drop = SequenceDropout(final_dropout, batch_first=batch_first)

    def forward(self, input: Tensor, lengths=None) -> Tensor:
        y = self.projection(input)
        for block in self.blocks:
            y = block(y, lengths)
        y = self.final(y, lengths)
        if self.output_norm is not None:
            y = self.output_norm(y, lengths, self.batch_first)
        return self.final_drop(y)


class DenseIndRNN(nn.Module):
    """Dense IndRNN (the authors' ``DenseNet``): a first layer of ``first_multiplier * growth_rate`` units, dense
    blocks (``block_layers`` layers each) whose layers are ``Linear(bottleneck * k) -> IndRNN+BN -> drop ->
    Linear(k) -> IndRNN+BN -> drop`` with their output concatenated to their input, and transition layers
    (``Linear`` to half the features -> IndRNN+BN -> drop) between blocks. ``dropout`` = rates (first, dense,
    bottleneck, transition).

    ``bn_location``: batch norm (over time) "after" (default, the authors' classification recipes) or "before" each
    recurrence. ``last_transition``: one more transition layer after the last block, halving the features again
    (the authors' ``add_last_layer``, used in their pixel-MNIST recipe), at the transition dropout rate. The
    recurrences have no bias of their own (each follows a Linear or batch norm that has one).
    ``recurrent_init``/``recurrent_bound``/``recurrent_min_abs`` apply to every recurrence (see :class:`IndRNN`);
    ``last_recurrent_init`` replaces ``recurrent_init`` for the network's final recurrence (the authors use
    ``init.last_layer_range(bound)`` there together with ``last_transition``).

    ``forward(input [T, B, input_size], lengths=None) -> [T, B, out_features]`` (``[B, T, ...]`` with
    ``batch_first``).
    """

    def __init__(self, input_size: int, growth_rate: int = 16, block_layers: Sequence[int] = (8, 6, 4),
                 bottleneck: int = 4, first_multiplier: int = 6,
                 dropout: Sequence[float] = (0.2, 0.2, 0.1, 0.1), activation: str = "relu", recurrent_init=None,
                 recurrent_bound: Optional[float] = None, batch_first: bool = False, *,
                 bn_location: str = "after", last_transition: bool = False, last_recurrent_init=None,
                 recurrent_min_abs: Optional[float] = None) -> None:
        super().__init__()
        if len(dropout) != 4:
            raise ValueError(f"dropout must be 4 rates (first, dense, bottleneck, transition), got {dropout!r}")
        bn_before = _check_bn_location(bn_location)
        rec = {"activation": activation, "recurrent_init": recurrent_init, "recurrent_bound": recurrent_bound,
               "recurrent_min_abs": recurrent_min_abs, "batch_first": batch_first}
        self.batch_first, self.bn_location = batch_first, bn_location
        p_first, p_dense, p_bottleneck, p_transition = dropout
        k = growth_rate
        features = first_multiplier * k
        layers: list[nn.Module] = [_Layer(input_size, features, p_first, bn_before, **rec)]
        for i, count in enumerate(block_layers):
            for _ in range(count):
                layers.append(_DenseLayer(features, k, bottleneck * k, p_bottleneck, p_dense, bn_before, **rec))
                features += k
            if i < len(block_layers) - 1 or last_transition:
                layers.append(_Layer(features, features // 2, p_transition, bn_before, **rec))
                features //= 2
        self.layers = nn.ModuleList(layers)
        last = [m for m in self.modules() if isinstance(m, IndRNNRecurrence)][-1]
        _init_last_recurrence(last, last_recurrent_init)
        self.input_size, self.growth_rate, self.out_features = input_size, growth_rate, features

    def forward(self, input: Tensor, lengths=None) -> Tensor:
        for layer in self.layers:
            input = layer(input, lengths)
        return input


class _DenseLayer(nn.Module):
    def __init__(self, in_features: int, growth: int, width: int, p_bottleneck: float, p_dense: float,
                 bn_before: bool, **rec) -> None:
        super().__init__()
        self.bottleneck = _Layer(in_features, width, p_bottleneck, bn_before, **rec)
        self.growth = _Layer(width, growth, p_dense, bn_before, **rec)

    def forward(self, x: Tensor, lengths=None) -> Tensor:
        return torch.cat([x, self.growth(self.bottleneck(x, lengths), lengths)], dim=-1)
