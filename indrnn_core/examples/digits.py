"""Pixel-by-pixel classification of scikit-learn's handwritten digits (8x8 images read as sequences of T=64 pixels):
the offline cousin of sequential MNIST, small enough to train in about a minute on a laptop CPU.

Recipe (the paper's pixel-MNIST one, scaled down): pixels scaled to [-1, 1] fed one per step; a stack of IndRNN
layers (ReLU) each followed by batch norm over time (and optional dropout shared over time); a linear classifier
on the last step; u bounded by 5^(1/64); Adam with gradient-norm clipping 10. Before each evaluation the batch-norm
statistics are recomputed over training batches under the current weights (``_torch.recalibrate_batch_norm``).
``--permute`` applies one fixed random permutation to the pixel order (the "permuted" variant, which removes the
local structure).

Example::

    $ python -m indrnn_core.examples.digits                 # 94-96% test accuracy in about a minute
    $ python -m indrnn_core.examples.digits --permute --epochs 30
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Optional

import numpy as np

from indrnn_core.examples import _common

SEQ_LEN = 64


def build_parser():
    int_ = _common.int_at_least
    p = _common.ArgumentParser(
        prog="python -m indrnn_core.examples.digits",
        description="Classify scikit-learn's 8x8 digits pixel by pixel (T=64) with a stacked IndRNN.",
        formatter_class=_common.HelpFormatter)
    p.add_argument("--epochs", type=int_(1), default=20, help="passes over the training set")
    p.add_argument("--hidden", type=int_(1), default=128, help="units per layer")
    p.add_argument("--layers", type=int_(1), default=4, help="stacked IndRNN layers")
    p.add_argument("--batch-size", type=int_(1), default=32, help="sequences per training step")
    p.add_argument("--lr", type=_common.positive_float, default=2e-3, help="Adam learning rate")
    p.add_argument("--dropout", type=_common.probability, default=0.0, help="dropout after each layer")
    p.add_argument("--no-batch-norm", action="store_true", help="leave out the batch norm after each layer")
    p.add_argument("--permute", action="store_true", help="feed the pixels in one fixed random order")
    p.add_argument("--test-fraction", type=_common.probability, default=0.2, help="share of images held out")
    _common.add_common_flags(p, out=os.path.join("runs", "digits"))
    return p


def load(seed: int, test_fraction: float, permute: bool):
    """Digits as ``(x_train [N, 64] in [-1, 1], y_train, x_test, y_test)`` float32/int64, split stratified by class
    with ``seed``; with ``permute`` the columns follow one fixed random permutation drawn from ``seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 8.0 - 1.0).astype(np.float32)
    if permute:
        x = x[:, np.random.default_rng(seed).permutation(SEQ_LEN)]
    return train_test_split(x, digits.target.astype(np.int64), test_size=test_fraction, stratify=digits.target,
                            random_state=seed)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.test_fraction < 1:
        parser.error(f"argument --test-fraction: pass a number in (0, 1), got {args.test_fraction}")
    _common.require_framework(parser, "torch", "indrnn_core.adapters.torch", label="PyTorch")
    _common.require_framework(parser, "sklearn", None, "pip install 'indrnn-core[examples]'", label="scikit-learn")
    import torch

    from indrnn_core.adapters.torch import register_recurrent_clipping
    from indrnn_core.examples import _torch

    device = _common.torch_device(parser, args.device)
    out_dir = _common.make_out_dir(parser, args.out)
    x_train, x_test, y_train, y_test = load(args.seed, args.test_fraction, args.permute)
    _common.seed_torch(args.seed)
    model = _torch.StackedIndRNNClassifier(1, args.hidden, args.layers, 10, SEQ_LEN, magnitude=5.0,
                                           batch_norm=not args.no_batch_norm, dropout=args.dropout).to(device)
    optimizer = _torch.adam(model, args.lr)
    register_recurrent_clipping(optimizer, model)

    def as_sequences(x):  # [B, 64] -> [64, B, 1], time-major
        return x.t().unsqueeze(-1).contiguous()

    tensors = {name: (torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
               for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test))}
    shuffle = torch.Generator().manual_seed(args.seed)

    def batches(name, generator=None):
        x, y = tensors[name]
        return lambda: ((as_sequences(xb), yb) for xb, yb in
                        _torch.minibatches(x, y, args.batch_size if generator else 512, generator))

    start = time.perf_counter()
    history, final = _torch.fit(model, optimizer, batches("train", shuffle),
                                {"train": batches("train"), "test": batches("test")},
                                epochs=args.epochs, grad_clip=10.0,
                                steps_per_epoch=-(-len(x_train) // args.batch_size),
                                desc="digits" + (" (permuted)" if args.permute else ""), quiet=args.quiet)
    seconds = time.perf_counter() - start
    variant = "permuted" if args.permute else "sequential"
    csv_path, png_path = _torch.save_history(
        out_dir, "digits", history,
        title=f"{variant} digits (T=64), IndRNN {args.layers}x{args.hidden}: accuracy")
    print(f"train {len(x_train)} / test {len(x_test)} images; final test accuracy {final['test_acc']:.4f}")
    print(f"wrote {csv_path}, {png_path}")
    print(_torch.summary_line(final["test_acc"], args.epochs, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
