"""Encoder-decoder in Keras 3 whose cells mix ``IndRNNCell`` and ``LSTMCell``, trained with teacher forcing and run
free at inference (its own readout fed back as the next input). Runs on the torch, jax and tensorflow backends.

Task: continue a sine wave. Each example is a wave of random frequency and phase; the encoder reads ``--t-in``
steps, the decoder predicts the next ``--t-out``. Training (teacher forcing): the decoder reads the true previous
value at every step (the target shifted right by one, a 0 start value first). Inference (free running): the
decoder reads its own previous prediction, one step at a time, from the encoder's final states.

The two decoders are one set of layers: ``keras.layers.RNN(StackedRNNCells([IndRNNCell, LSTMCell]))`` and a
``Dense(1)`` readout. Free running calls the same RNN layer on one step at a time with ``initial_state`` and
``return_state``; fed its own predictions as teacher-forcing input, the training model gives the same outputs,
which ``check_consistency`` asserts.

Example::

    $ KERAS_BACKEND=jax python docs/examples/keras_seq2seq.py --epochs 20
"""
from __future__ import annotations

import argparse

import keras
import numpy as np

from indrnn_core.adapters.keras import IndRNNCell


def waves(rng: np.random.Generator, n: int, t_in: int, t_out: int):
    """``(encoder input [n, t_in, 1], decoder input [n, t_out, 1], target [n, t_out, 1])`` float32 sine waves; the
    decoder input is the target shifted right by one step with a 0 first."""
    freq = rng.uniform(0.1, 0.3, (n, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    wave = np.sin(freq * np.arange(t_in + t_out) + phase).astype("float32")[..., None]
    enc, target = wave[:, :t_in], wave[:, t_in:]
    dec = np.concatenate([np.zeros_like(target[:, :1]), target[:, :-1]], axis=1)
    return enc, dec, target


def cells(units: int):
    """One stack of cells: an IndRNN cell under an LSTM cell."""
    return keras.layers.StackedRNNCells([IndRNNCell(units, recurrent_init=(0.0, 1.0)), keras.layers.LSTMCell(units)])


class Seq2Seq:
    """The layers, the teacher-forcing training model and the free-running decoder."""

    def __init__(self, units: int = 32, t_in: int = 30):
        self.encoder = keras.layers.RNN(cells(units), return_state=True, name="encoder")
        self.decoder = keras.layers.RNN(cells(units), return_sequences=True, return_state=True, name="decoder")
        self.readout = keras.layers.Dense(1, name="readout")
        enc_in = keras.Input((t_in, 1), name="encoder_input")
        dec_in = keras.Input((None, 1), name="decoder_input")  # any length: the free-running steps are length 1
        _, *states = self.encoder(enc_in)
        dec_out, *_ = self.decoder(dec_in, initial_state=states)
        self.train_model = keras.Model([enc_in, dec_in], self.readout(dec_out))
        self.train_model.compile(keras.optimizers.Adam(3e-3), "mse")

    def generate(self, enc: np.ndarray, t_out: int) -> np.ndarray:
        """Free running: ``[n, t_out, 1]`` predictions, each step's readout fed back as the next input."""
        _, *states = self.encoder(enc)
        y = keras.ops.zeros((enc.shape[0], 1, 1))
        outputs = []
        for _ in range(t_out):
            out, *states = self.decoder(y, initial_state=states)
            y = self.readout(out)
            outputs.append(y)
        return keras.ops.convert_to_numpy(keras.ops.concatenate(outputs, axis=1))


def check_consistency(model: Seq2Seq, enc: np.ndarray, t_out: int, atol: float = 1e-4) -> np.ndarray:
    """Free-running predictions equal the teacher-forced model's outputs when it is fed those predictions (shifted
    right) as its decoder input: the step-by-step and whole-sequence decoders are one model. Returns them."""
    free = model.generate(enc, t_out)
    fed = np.concatenate([np.zeros_like(free[:, :1]), free[:, :-1]], axis=1)
    forced = model.train_model.predict([enc, fed], verbose=0)
    np.testing.assert_allclose(forced, free, atol=atol, rtol=0)
    return free


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--t-in", type=int, default=30)
    p.add_argument("--t-out", type=int, default=10)
    p.add_argument("--units", type=int, default=32)
    p.add_argument("--train", type=int, default=2000, help="training sequences")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train, test = waves(rng, args.train, args.t_in, args.t_out), waves(rng, 200, args.t_in, args.t_out)
    model = Seq2Seq(args.units, args.t_in)
    first = model.train_model.evaluate([test[0], test[1]], test[2], verbose=0)
    model.train_model.fit([train[0], train[1]], train[2], batch_size=64, epochs=args.epochs, verbose=0)
    forced = model.train_model.evaluate([test[0], test[1]], test[2], verbose=0)
    free = check_consistency(model, test[0], args.t_out)
    result = {"backend": keras.config.backend(), "mse_before": float(first), "mse_teacher_forced": float(forced),
              "mse_free_running": float(np.mean((free - test[2]) ** 2)),
              "mse_predict_zero": float(np.mean(test[2] ** 2))}
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
