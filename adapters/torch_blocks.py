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

from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor, nn

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
    ``t`` of the input with the statistics of absolute step ``start + t`` (< ``max_steps``)."""

    def __init__(self, num_features: int, max_steps: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.max_steps, self.eps, self.momentum = num_features, max_steps, eps, momentum
        self.weight = nn.Parameter(torch.empty(num_features, **factory)) if affine else None
        self.bias = nn.Parameter(torch.empty(num_features, **factory)) if affine else None
        self.register_buffer("running_mean", torch.empty(max_steps, num_features, **factory))
        self.register_buffer("running_var", torch.empty(max_steps, num_features, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.running_mean)
        nn.init.ones_(self.running_var)
        if self.weight is not None:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return f"{self.num_features}, max_steps={self.max_steps}, eps={self.eps}, momentum={self.momentum}"

    def forward(self, input: Tensor, start: int = 0) -> Tensor:
        if input.dim() != 3 or input.shape[-1] != self.num_features:
            raise ValueError(f"input must have shape [T, B, {self.num_features}], got {tuple(input.shape)}")
        steps = input.shape[0]
        if not 0 <= start or start + steps > self.max_steps:
            raise ValueError(f"start + T must be in [0, max_steps={self.max_steps}], got start={start}, T={steps}")
        if self.training:
            mean = input.mean(1)
            var = input.var(1, unbiased=False)
            with torch.no_grad():
                n = input.shape[1]
                self.running_mean[start:start + steps].lerp_(mean, self.momentum)
                self.running_var[start:start + steps].lerp_(var * (n / max(n - 1, 1)), self.momentum)
        else:
            mean, var = self.running_mean[start:start + steps], self.running_var[start:start + steps]
        out = (input - mean.unsqueeze(1)) * torch.rsqrt(var.unsqueeze(1) + self.eps)
        return out * self.weight + self.bias if self.weight is not None else out


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


def _recurrence(features: int, activation: str, recurrent_init, recurrent_bound,
                batch_first: bool) -> IndRNNRecurrence:
    return IndRNNRecurrence(features, activation=activation, recurrent_init=recurrent_init,
                            recurrent_bound=recurrent_bound, batch_first=batch_first)


class _Layer(nn.Module):
    """Linear -> IndRNN recurrence -> BN over time -> sequence dropout: one layer of the dense network."""

    def __init__(self, in_features: int, out_features: int, dropout: float, **rec) -> None:
        super().__init__()
        self.batch_first = rec["batch_first"]
        self.linear = nn.Linear(in_features, out_features)
        self.recurrence = _recurrence(out_features, **rec)
        self.norm = BatchNormOverTime(out_features)
        self.drop = SequenceDropout(dropout, batch_first=self.batch_first)

    def forward(self, x: Tensor, lengths=None) -> Tensor:
        h = self.recurrence(self.linear(x), lengths=lengths)[0]
        return self.drop(self.norm(h, lengths, self.batch_first))


class _ResidualBlock(nn.Module):
    """Pre-activation residual block: ``x + ([BN -> IndRNN -> dropout -> Linear] x 2)(x)``."""

    def __init__(self, features: int, dropout: float, **rec) -> None:
        super().__init__()
        self.batch_first = rec["batch_first"]
        self.norms = nn.ModuleList(BatchNormOverTime(features) for _ in range(2))
        self.recurrences = nn.ModuleList(_recurrence(features, **rec) for _ in range(2))
        self.drop = SequenceDropout(dropout, batch_first=self.batch_first)
        self.linears = nn.ModuleList(nn.Linear(features, features) for _ in range(2))

    def forward(self, x: Tensor, lengths=None) -> Tensor:
        y = x
        for norm, recurrence, linear in zip(self.norms, self.recurrences, self.linears):
            y = linear(self.drop(recurrence(norm(y, lengths, self.batch_first), lengths=lengths)[0]))
        return x + y


class ResidualIndRNN(nn.Module):
    """Residual IndRNN (pre-activation): input Linear, ``num_blocks`` residual blocks of
    ``[BN -> IndRNN -> dropout -> Linear] x 2`` plus identity, then a final ``BN -> IndRNN -> BN``.

    ``forward(input [T, B, input_size], lengths=None) -> [T, B, hidden_size]`` (``[B, T, ...]`` with
    ``batch_first``); put a classifier on the last step (``out[-1]``, or each sequence's last valid step).
    ``recurrent_init``/``recurrent_bound`` apply to every recurrence (see :class:`IndRNN`).
    """

    def __init__(self, input_size: int, hidden_size: int, num_blocks: int = 2, dropout: float = 0.0,
                 activation: str = "relu", recurrent_init=None, recurrent_bound: Optional[float] = None,
                 batch_first: bool = False) -> None:
        super().__init__()
        rec = {"activation": activation, "recurrent_init": recurrent_init, "recurrent_bound": recurrent_bound,
               "batch_first": batch_first}
        self.input_size, self.hidden_size, self.batch_first = input_size, hidden_size, batch_first
        self.projection = nn.Linear(input_size, hidden_size)
        self.blocks = nn.ModuleList(_ResidualBlock(hidden_size, dropout, **rec) for _ in range(num_blocks))
        self.final_norm = BatchNormOverTime(hidden_size)
        self.final_recurrence = _recurrence(hidden_size, **rec)
        self.output_norm = BatchNormOverTime(hidden_size)

    def forward(self, input: Tensor, lengths=None) -> Tensor:
        y = self.projection(input)
        for block in self.blocks:
            y = block(y, lengths)
        y = self.final_recurrence(self.final_norm(y, lengths, self.batch_first), lengths=lengths)[0]
        return self.output_norm(y, lengths, self.batch_first)


class DenseIndRNN(nn.Module):
    """Dense IndRNN: a first layer of ``first_multiplier * growth_rate`` units, dense blocks (``block_layers``
    layers each) whose layers are ``Linear(bottleneck * k) -> IndRNN+BN -> drop -> Linear(k) -> IndRNN+BN -> drop``
    with their output concatenated to their input, and transition layers (``Linear`` to half the features ->
    IndRNN+BN -> drop) between blocks. ``dropout`` = rates (first, dense, bottleneck, transition).

    ``forward(input [T, B, input_size], lengths=None) -> [T, B, out_features]`` (``[B, T, ...]`` with
    ``batch_first``).
    """

    def __init__(self, input_size: int, growth_rate: int = 16, block_layers: Sequence[int] = (8, 6, 4),
                 bottleneck: int = 4, first_multiplier: int = 6,
                 dropout: Sequence[float] = (0.2, 0.2, 0.1, 0.1), activation: str = "relu", recurrent_init=None,
                 recurrent_bound: Optional[float] = None, batch_first: bool = False) -> None:
        super().__init__()
        if len(dropout) != 4:
            raise ValueError(f"dropout must be 4 rates (first, dense, bottleneck, transition), got {dropout!r}")
        rec = {"activation": activation, "recurrent_init": recurrent_init, "recurrent_bound": recurrent_bound,
               "batch_first": batch_first}
        self.batch_first = batch_first
        p_first, p_dense, p_bottleneck, p_transition = dropout
        k = growth_rate
        features = first_multiplier * k
        layers: list[nn.Module] = [_Layer(input_size, features, p_first, **rec)]
        for i, count in enumerate(block_layers):
            for _ in range(count):
                layers.append(_DenseLayer(features, k, bottleneck * k, p_bottleneck, p_dense, **rec))
                features += k
            if i < len(block_layers) - 1:
                layers.append(_Layer(features, features // 2, p_transition, **rec))
                features //= 2
        self.layers = nn.ModuleList(layers)
        self.input_size, self.growth_rate, self.out_features = input_size, growth_rate, features

    def forward(self, input: Tensor, lengths=None) -> Tensor:
        for layer in self.layers:
            input = layer(input, lengths)
        return input


class _DenseLayer(nn.Module):
    def __init__(self, in_features: int, growth: int, width: int, p_bottleneck: float, p_dense: float,
                 **rec) -> None:
        super().__init__()
        self.bottleneck = _Layer(in_features, width, p_bottleneck, **rec)
        self.growth = _Layer(width, growth, p_dense, **rec)

    def forward(self, x: Tensor, lengths=None) -> Tensor:
        return torch.cat([x, self.growth(self.bottleneck(x, lengths), lengths)], dim=-1)
