"""Variable-length multivariate classification: JapaneseVowels from the UCR/UEA archive, bundled with ``aeon`` (no
download). Nine speakers say the vowels /ae/; each utterance is a sequence of 7 to 29 frames of 12 LPC cepstrum
coefficients; the task is to name the speaker (270 training and 370 test utterances).

The sequences are packed (``torch.nn.utils.rnn.pack_sequence``) so the IndRNN runs each one for its own length (the
kernels' ``lengths``) and the classifier reads each sequence's own final state ``h_n[-1]``, not a padded step.

Example::

    $ python -m indrnn_core.examples.vowels                # ~97% test accuracy in seconds
    $ python -m indrnn_core.examples.vowels --bidirectional
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Optional

import numpy as np

from indrnn_core.examples import _common

NUM_CLASSES = 9
NUM_CHANNELS = 12


def build_parser() -> argparse.ArgumentParser:
    int_ = _common.int_at_least
    p = _common.ArgumentParser(
        prog="python -m indrnn_core.examples.vowels",
        description="Classify JapaneseVowels (UEA archive, bundled with aeon): variable-length sequences of 12 "
                    "channels, fed to an IndRNN as a PackedSequence.",
        formatter_class=_common.HelpFormatter)
    p.add_argument("--epochs", type=int_(1), default=20, help="passes over the training set")
    p.add_argument("--hidden", type=int_(1), default=64, help="units per layer")
    p.add_argument("--layers", type=int_(1), default=2, help="stacked IndRNN layers")
    p.add_argument("--batch-size", type=int_(1), default=16, help="sequences per training step")
    p.add_argument("--lr", type=_common.positive_float, default=2e-3, help="Adam learning rate")
    p.add_argument("--dropout", type=_common.probability, default=0.1, help="dropout between layers")
    p.add_argument("--bidirectional", action="store_true", help="also read each sequence backwards")
    _common.add_common_flags(p, out=os.path.join("runs", "vowels"))
    return p


def load() -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    """JapaneseVowels as lists of ``[L_i, 12]`` float32 arrays (channels standardised with the training statistics)
    and int64 labels 0..8: ``(x_train, y_train, x_test, y_test)``."""
    from aeon.datasets import load_japanese_vowels

    data = []
    for split in ("train", "test"):
        x, y = load_japanese_vowels(split=split)  # a list of [12, L_i] arrays, labels '1'..'9'
        data.append(([np.asarray(s, np.float64).T for s in x], np.asarray(y).astype(np.int64) - 1))
    (x_train, y_train), (x_test, y_test) = data
    frames = np.concatenate(x_train)
    mean, std = frames.mean(0), frames.std(0) + 1e-8
    scale = lambda xs: [((s - mean) / std).astype(np.float32) for s in xs]  # noqa: E731
    return scale(x_train), y_train, scale(x_test), y_test


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _common.require_framework(parser, "torch", "indrnn_core.adapters.torch", label="PyTorch")
    _common.require_framework(parser, "aeon", None, "pip install 'indrnn-core[examples]'", label="aeon")
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_sequence

    from indrnn_core import init as core_init
    from indrnn_core.adapters.torch import IndRNN, register_recurrent_clipping
    from indrnn_core.examples import _torch

    device = _common.torch_device(parser, args.device)
    out_dir = _common.make_out_dir(parser, args.out)
    x_train, y_train, x_test, y_test = load()
    max_len = max(len(s) for s in x_train + x_test)

    class Classifier(nn.Module):
        """IndRNN over a PackedSequence; Linear on each sequence's own final state (both directions' with
        --bidirectional)."""

        def __init__(self):
            super().__init__()
            bound = core_init.recurrent_bound(max_len, magnitude=2.0)
            self.rnn = IndRNN(NUM_CHANNELS, args.hidden, num_layers=args.layers, dropout=args.dropout,
                              bidirectional=args.bidirectional, recurrent_bound=bound,
                              recurrent_init=_torch.recurrent_ranges(args.layers, bound))
            self.directions = 2 if args.bidirectional else 1
            self.classifier = nn.Linear(args.hidden * self.directions, NUM_CLASSES)

        def forward(self, packed):
            _, h_n = self.rnn(packed)  # [layers * directions, B, H], each at its sequence's last valid step
            return self.classifier(torch.cat(list(h_n[-self.directions:]), dim=-1))

    _common.seed_torch(args.seed)
    model = Classifier().to(device)
    optimizer = _torch.adam(model, args.lr)
    register_recurrent_clipping(optimizer, model)

    def to_batches(xs, ys, batch_size, generator=None):
        order = torch.randperm(len(xs), generator=generator) if generator is not None else torch.arange(len(xs))
        for start in range(0, len(xs), batch_size):
            idx = order[start:start + batch_size].tolist()
            packed = pack_sequence([torch.from_numpy(xs[i]) for i in idx], enforce_sorted=False).to(device)
            yield packed, torch.from_numpy(ys[idx]).to(device)

    shuffle = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    history, final = _torch.fit(
        model, optimizer, lambda: to_batches(x_train, y_train, args.batch_size, shuffle),
        {"train": lambda: to_batches(x_train, y_train, 512), "test": lambda: to_batches(x_test, y_test, 512)},
        epochs=args.epochs, grad_clip=10.0,
        steps_per_epoch=-(-len(x_train) // args.batch_size), desc="vowels", quiet=args.quiet)
    seconds = time.perf_counter() - start
    lengths = [len(s) for s in x_train + x_test]
    csv_path, png_path = _torch.save_history(
        out_dir, "vowels", history,
        title=f"JapaneseVowels (lengths {min(lengths)}-{max(lengths)}), IndRNN {args.layers}x{args.hidden}: accuracy"
              + (" bidirectional" if args.bidirectional else ""))
    print(f"train {len(x_train)} / test {len(x_test)} sequences of {min(lengths)}-{max(lengths)} steps; "
          f"final test accuracy {final['test_acc']:.4f}")
    print(f"wrote {csv_path}, {png_path}")
    print(_torch.summary_line(final["test_acc"], args.epochs, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
