"""Deep IndRNN (Li et al., arXiv:1910.06251) as a residual network of ``IndRNN`` layers and stock Keras layers, on
the torch, jax and tensorflow backends.

Each residual block is the paper's pre-activation "res-IndRNN" unit, twice ``BatchNormalization -> IndRNN``
(the IndRNN's input kernel is the paper's weight layer) with dropout between, added to the block's input. Dropout
is ``keras.layers.Dropout(noise_shape=(None, 1, units))``: one mask per sequence, the same at every step, as the
paper drops units. The recurrent weights follow the paper's recipe from ``indrnn_core.init``: ``|u| <=
recurrent_bound(T)`` kept by a ``RecurrentClip`` constraint after every optimiser step, hidden layers initialised
in ``hidden_range``, the last one (read only at the final step) in ``last_layer_range``, followed by batch norm (its
output sums about ``T`` steps of nearly undamped memory).

Task: a synthetic sequential classification (which of ``--classes`` frequencies a noisy wave has), read at the last
step through a softmax.

Example::

    $ KERAS_BACKEND=torch python docs/examples/keras_deep_indrnn.py --blocks 3 --epochs 10
"""
from __future__ import annotations

import argparse

import keras
import numpy as np

from indrnn_core import init
from indrnn_core.adapters.keras import IndRNN, RecurrentClip


MOMENTUM = 0.9  # of the batch-norm statistics (Keras' default 0.99 adapts too slowly for a short run)


def data(rng: np.random.Generator, n: int, seq_len: int, classes: int):
    """``(x [n, seq_len, 1] float32, y [n] int)``: sine waves of one of ``classes`` frequencies plus noise."""
    y = rng.integers(0, classes, n)
    freq = 0.05 + 0.1 * y[:, None]
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    x = np.sin(freq * np.arange(seq_len) + phase) + 0.3 * rng.standard_normal((n, seq_len))
    return x.astype("float32")[..., None], y


def indrnn(units: int, bound: float, recurrent_range, **kwargs) -> IndRNN:
    return IndRNN(units, recurrent_init=recurrent_range, recurrent_constraint=RecurrentClip(bound), **kwargs)


def residual_block(x, units: int, bound: float, dropout: float):
    """Pre-activation res-IndRNN unit: ``x + IndRNN(BN(Dropout(IndRNN(BN(x)))))``."""
    h = keras.layers.BatchNormalization(momentum=MOMENTUM)(x)
    h = indrnn(units, bound, init.hidden_range(bound), return_sequences=True)(h)
    h = keras.layers.Dropout(dropout, noise_shape=(None, 1, units))(h)  # one mask per sequence
    h = keras.layers.BatchNormalization(momentum=MOMENTUM)(h)
    h = indrnn(units, bound, init.hidden_range(bound), return_sequences=True)(h)
    return keras.layers.Add()([x, h])


def build(seq_len: int, classes: int, units: int = 64, blocks: int = 2, dropout: float = 0.1,
          magnitude: float = 5.0) -> keras.Model:
    """The residual Deep IndRNN: IndRNN to ``units`` features, ``blocks`` residual units, a last IndRNN read at
    the final step (long-memory init), batch norm and a softmax classifier."""
    bound = init.recurrent_bound(seq_len, magnitude)
    inputs = keras.Input((seq_len, 1))
    h = indrnn(units, bound, init.hidden_range(bound), return_sequences=True)(inputs)
    for _ in range(blocks):
        h = residual_block(h, units, bound, dropout)
    h = keras.layers.BatchNormalization(momentum=MOMENTUM)(h)
    h = indrnn(units, bound, init.last_layer_range(bound))(h)  # the last step only
    h = keras.layers.BatchNormalization(momentum=MOMENTUM)(h)
    outputs = keras.layers.Dense(classes, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--units", type=int, default=64)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    (x, y), (xt, yt) = data(rng, args.train, args.seq_len, args.classes), data(rng, 500, args.seq_len, args.classes)
    model = build(args.seq_len, args.classes, args.units, args.blocks)
    before = model.evaluate(xt, yt, verbose=0)
    model.fit(x, y, batch_size=50, epochs=args.epochs, verbose=0)
    after = model.evaluate(xt, yt, verbose=0)
    bound = init.recurrent_bound(args.seq_len, 5.0)
    u_max = max(float(np.abs(keras.ops.convert_to_numpy(layer.recurrent_kernel)).max())
                for layer in model.layers if isinstance(layer, IndRNN))
    result = {"backend": keras.config.backend(), "parameters": model.count_params(), "loss_before": before[0],
              "loss_after": after[0], "accuracy": after[1], "max_abs_u": u_max, "bound": bound}
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
