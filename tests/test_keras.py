"""The Keras 3 layer and cell (``indrnn_core.adapters.keras``) on each backend: torch, jax and tensorflow.

Keras picks its backend once per process (``KERAS_BACKEND``), so each backend runs in one subprocess that executes
every check below (this file run as a script) and reports each one; pytest then shows one result per (backend,
check). The checks: values against a float64 NumPy loop (masks of every shape, ``go_backwards``, initial state,
``zero_output_for_mask``); values and gradients against ``keras.layers.RNN(IndRNNCell)`` stepping and against a
``keras.ops`` loop; training lowers the loss; ``.keras`` save/load and ``get_config``/``from_config``; masked
batches against each sequence alone, eagerly and inside the backend's compiled ``predict``; the parameter count;
constraints acting per unit on the ``(1, units)`` recurrent kernel; ``recurrent_max_abs``/``recurrent_min_abs``;
dropout (one mask per sequence) and the stepped ``recurrent_dropout`` path against the cell; stateful runs;
the XLA opt-out on tensorflow; bad input. An unsupported backend (numpy) gets its own tiny subprocess.

Tolerances: float64 checks allow ``8 * eps * n`` of :func:`indrnn_core.testing.scaled_error`, ``n`` the longest
chain of roundings (``T + 1`` steps; ``T * B`` terms for weight gradients); float32 ones the same with float32's
eps. Every input and initializer is seeded.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback

import numpy as np

BACKENDS = ("torch", "jax", "tensorflow")
RESULT_MARK = "KERAS-CHECKS:"


# ================================================================================================================
# The checks (run in the subprocess; keras is imported only there)
# ================================================================================================================
def _tol(dtype, n):
    return 8 * np.finfo(dtype).eps * n


def _relu(v):
    return np.maximum(v, 0.0)


def numpy_indrnn(x, W, u, b, h0=None, mask=None, go_backwards=False, zero_output_for_mask=False, act=_relu):
    """Keras' RNN semantics, step by step in float64: masked steps keep the state and output the previous output
    (zeros before any valid step, or always with ``zero_output_for_mask``). Returns (outputs [B, T, H], state)."""
    x = np.asarray(x, np.float64)
    B, T, _ = x.shape
    if go_backwards:
        x = x[:, ::-1]
        mask = None if mask is None else mask[:, ::-1]
    h = np.zeros((B, W.shape[1])) if h0 is None else np.asarray(h0, np.float64).copy()
    prev = np.zeros_like(h)
    outs = []
    for t in range(T):
        new = act(x[:, t] @ W + u.reshape(-1) * h + (0 if b is None else b))
        m = np.ones((B, 1), bool) if mask is None else mask[:, t][:, None]
        h = np.where(m, new, h)
        out = np.where(m, new, 0.0 if zero_output_for_mask else prev)
        prev = out
        outs.append(out)
    return np.stack(outs, 1), h


class Checks:
    """Every check is a method ``check_*``; ``run`` executes them all and reports {name: "ok" | traceback}."""

    def __init__(self):
        import keras

        self.keras = keras
        self.ops = keras.ops
        self.backend = keras.config.backend()
        from indrnn_core.adapters import keras as ik

        self.ik = ik

    # ---- helpers -----------------------------------------------------------------------------------------------
    def np(self, t):
        return np.asarray(self.ops.convert_to_numpy(t))

    def seed(self, s=0):
        self.keras.utils.set_random_seed(s)

    def close(self, actual, expected, tol, what):
        from indrnn_core.testing import scaled_error

        err = scaled_error(self.np(actual), expected)
        assert err <= tol, f"{what}: scaled error {err:.3g} > {tol:.3g}"

    def grads(self, loss_fn, variables, x):
        """d loss_fn(x) / d (x, *variables) as NumPy arrays, through the backend's autodiff."""
        keras = self.keras
        if self.backend == "tensorflow":
            import tensorflow as tf

            xt = tf.constant(x)
            with tf.GradientTape() as tape:
                tape.watch(xt)
                loss = loss_fn(xt)
            return [self.np(g) for g in tape.gradient(loss, [xt] + [v.value for v in variables])]
        if self.backend == "torch":
            import torch

            xt = torch.tensor(x, requires_grad=True)
            for v in variables:
                v.value.grad = None
            loss_fn(xt).backward()
            return [xt.grad.numpy()] + [v.value.grad.detach().numpy().copy() for v in variables]
        import jax

        def f(xv, values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss_fn(xv)

        gx, gv = jax.grad(f, argnums=(0, 1))(jax.numpy.asarray(x), [v.value for v in variables])
        return [np.asarray(gx)] + [np.asarray(g) for g in gv]

    def weights(self, layer):
        return [self.np(w) for w in (layer.kernel, layer.recurrent_kernel, layer.bias)]

    def problem(self, B=4, T=9, D=3, H=5, seed=0, dtype="float64"):
        rng = np.random.default_rng(seed)
        return (rng.standard_normal((B, T, D)).astype(dtype), rng.standard_normal((B, H)).astype(dtype),
                rng.standard_normal((B, T, H)).astype(dtype))

    def layer(self, H=5, D=3, seed=0, batch=None, **kwargs):
        """A built float64 IndRNN with u in (-1, 1) (both signs) and a nonzero bias."""
        keras = self.keras
        layer = self.ik.IndRNN(H, dtype=kwargs.pop("dtype", "float64"),
                               recurrent_initializer=keras.initializers.RandomUniform(-1, 1, seed=seed),
                               bias_initializer=keras.initializers.RandomNormal(0, 0.5, seed=seed + 1),
                               kernel_initializer=keras.initializers.RandomNormal(0, 0.7, seed=seed + 2),
                               seed=seed, **kwargs)
        layer.build((batch, None, D))
        return layer

    # ---- checks ------------------------------------------------------------------------------------------------
    def check_parameter_count_and_shapes(self):
        keras = self.keras
        model = keras.Sequential([keras.Input((50, 2)), self.ik.IndRNN(128)])
        layer = model.layers[0]
        assert layer.count_params() == 512, layer.count_params()
        assert tuple(layer.kernel.shape) == (2, 128) and tuple(layer.recurrent_kernel.shape) == (1, 128)
        assert tuple(layer.bias.shape) == (128,)
        nobias = keras.Sequential([keras.Input((5, 2)), self.ik.IndRNN(7, use_bias=False)])
        assert nobias.count_params() == 2 * 7 + 7

    def check_default_init_follows_core(self):
        self.seed(0)
        layer = self.ik.IndRNN(64, recurrent_init=(0.5, 0.9))
        layer.build((None, None, 3))
        W, u, b = self.weights(layer)
        assert np.abs(W).max() <= 1 / np.sqrt(64) and np.abs(W).max() > 0.5 / np.sqrt(64)
        assert u.min() >= 0.5 and u.max() <= 0.9 and np.all(b == 0)
        default = self.ik.IndRNN(64)
        default.build((None, None, 3))
        u = self.np(default.recurrent_kernel)
        assert u.min() >= 0 and u.max() <= 1

    def check_numpy_loop_values(self):
        x, h0, _ = self.problem()
        B, T, _ = x.shape
        masks = {
            "none": None,
            "right_padded": np.arange(T)[None] < np.array([9, 4, 1, 0])[:, None],
            "holes": np.random.default_rng(3).random((B, T)) < 0.6,
        }
        for go_backwards in (False, True):
            for zero_out in (False, True):
                layer = self.layer(return_sequences=True, return_state=True, go_backwards=go_backwards,
                                   zero_output_for_mask=zero_out)
                W, u, b = self.weights(layer)
                for name, mask in masks.items():
                    for init in (None, h0):
                        out, state = layer(x, initial_state=None if init is None else [init], mask=mask)
                        ref_out, ref_state = numpy_indrnn(x, W, u, b, init, mask, go_backwards, zero_out)
                        what = (f"{name} mask, go_backwards={go_backwards}, zero_output={zero_out}, "
                                f"h0={init is not None}")
                        self.close(out, ref_out, _tol(np.float64, T + 1), what + ": outputs")
                        self.close(state, ref_state, _tol(np.float64, T + 1), what + ": state")

    def check_activations(self):
        x, h0, _ = self.problem()
        for act, fn in (("tanh", np.tanh), ("sigmoid", lambda v: 1 / (1 + np.exp(-v))), ("linear", lambda v: v),
                        (None, lambda v: v), (self.keras.activations.relu, _relu)):
            layer = self.layer(activation=act, return_sequences=True)
            W, u, b = self.weights(layer)
            ref, _ = numpy_indrnn(x, W, u, b, act=fn)
            self.close(layer(x), ref, _tol(np.float64, x.shape[1] + 1), f"activation {act}")

    def _agreement(self, layer_kwargs, mask, initial_state, training=False):
        """IndRNN, RNN(IndRNNCell) and (without mask) a keras.ops loop: outputs, state and every gradient."""
        keras, ops = self.keras, self.ops
        x, h0, c = self.problem()
        T = x.shape[1]
        fused = self.layer(return_sequences=True, return_state=True, **layer_kwargs)
        cell_kwargs = {k: v for k, v in layer_kwargs.items() if k in ("dropout", "recurrent_dropout", "activation")}
        stepped = keras.layers.RNN(self.ik.IndRNNCell(5, dtype="float64", seed=0, **cell_kwargs),
                                   return_sequences=True, return_state=True, dtype="float64",
                                   go_backwards=layer_kwargs.get("go_backwards", False))
        stepped.build((None, None, x.shape[2]))
        stepped.set_weights(fused.get_weights())
        init = None if initial_state is None else [ops.convert_to_tensor(h0)]
        c = ops.convert_to_tensor(c)

        def loss_of(layer):
            def loss(xv):
                out, state = layer(xv, initial_state=init, mask=mask, training=training)
                return ops.sum(out * c) + ops.sum(state * c[:, 0])
            return loss

        got = self.grads(loss_of(fused), fused.trainable_variables, x)
        want = self.grads(loss_of(stepped), stepped.trainable_variables, x)
        names = ("x", "kernel", "recurrent_kernel", "bias")
        n = {"x": T + 1, "kernel": T * x.shape[0] * 4, "recurrent_kernel": T * x.shape[0], "bias": T * x.shape[0]}
        for name, g, w in zip(names, got, want):
            assert g.shape == w.shape, (name, g.shape, w.shape)
            self.close(g, w, _tol(np.float64, n[name]), f"{layer_kwargs} mask={mask is not None}: grad {name}")
        out, state = fused(x, initial_state=init, mask=mask, training=training)
        out2, state2 = stepped(x, initial_state=init, mask=mask, training=training)
        self.close(out, self.np(out2), _tol(np.float64, T + 1), f"{layer_kwargs}: outputs")
        self.close(state, self.np(state2), _tol(np.float64, T + 1), f"{layer_kwargs}: state")
        if mask is None and not layer_kwargs and not training:
            def plain(xv):  # the same math as a keras.ops loop
                u = ops.reshape(fused.recurrent_kernel, (-1,))
                h = ops.convert_to_tensor(h0) if init is not None else ops.zeros((x.shape[0], 5), "float64")
                outs = []
                for t in range(T):
                    h = ops.relu(ops.einsum("bd,du->bu", xv[:, t], fused.kernel) + u * h + fused.bias)
                    outs.append(h)
                return ops.sum(ops.stack(outs, 1) * c) + ops.sum(h * c[:, 0])
            want = self.grads(plain, fused.trainable_variables, x)
            for name, g, w in zip(names, got, want):
                self.close(g, w, _tol(np.float64, n[name]), f"keras.ops loop: grad {name}")

    def check_cell_and_loop_agreement(self):
        T, B = 9, 4
        right = np.arange(T)[None] < np.array([9, 4, 2, 7])[:, None]
        holes = np.array([[1, 1, 0, 1, 0, 0, 1, 1, 1]] * 2 + [[1, 0, 1, 0, 1, 0, 1, 0, 1]] * 2, bool)
        backwards, tanh = {"go_backwards": True}, {"activation": "tanh"}
        # Each mask kind with and without h0, forwards and backwards (the keras.ops loop runs in the first case).
        cases = [({}, None, None), ({}, None, "h0"), ({}, right, "h0"), ({}, holes, None), (backwards, None, "h0"),
                 (backwards, right, None), (backwards, right, "h0"), (backwards, holes, "h0"), (tanh, holes, "h0")]
        for kwargs, mask, initial_state in cases:
            if (self.backend == "jax" and initial_state and mask is not None
                    and not mask[:, -1 if kwargs.get("go_backwards") else 0].all()):
                # Keras' own jax lax.scan loop outputs the initial state at masked steps before the first valid
                # one (its torch and tensorflow loops, and this layer, output zeros): the NumPy loop checks those.
                continue
            self._agreement(kwargs, mask, initial_state)

    def check_dropout_matches_cell(self):
        # The same seed gives the same masks in both (keras.layers.RNN makes them before its loop): the fused
        # layer's one-mask-per-sequence input dropout equals the cell's, and recurrent_dropout steps the cell.
        for kwargs in ({"dropout": 0.4}, {"recurrent_dropout": 0.4}, {"dropout": 0.3, "recurrent_dropout": 0.3}):
            self._agreement(kwargs, None, "h0", training=True)
        layer = self.layer(dropout=0.5, return_sequences=True)
        x, _, _ = self.problem()
        a, b_ = self.np(layer(x, training=True)), self.np(layer(x, training=True))
        assert not np.allclose(a, b_), "a fresh mask per call"
        self.close(layer(x, training=False), self.np(layer(x)), 0.0, "inference ignores dropout")

    def check_dropout_one_mask_per_sequence(self):
        # Dropping input feature j of sequence b at every step equals zeroing it in the input.
        layer = self.layer(dropout=0.5, return_sequences=True, D=6)
        x = np.random.default_rng(1).standard_normal((3, 7, 6))
        self.seed(5)
        out = self.np(layer(x, training=True))
        W, u, b = self.weights(layer)
        # Recover the mask: a feature's contribution is either kept (scaled by 2) or dropped for a whole sequence.
        found = False
        for bits in range(2 ** 6):
            keep = np.array([(bits >> j) & 1 for j in range(6)], float) * 2.0
            ref0, _ = numpy_indrnn(x[:1] * keep, W, u, b)
            if np.allclose(ref0, out[:1], atol=1e-9):
                found = True
                break
        assert found, "sequence 0's output is no input times one fixed per-feature mask"

    def check_recurrent_bounds_in_forward(self):
        x, h0, _ = self.problem()
        layer = self.layer(recurrent_max_abs=0.6, recurrent_min_abs=0.2, return_sequences=True)
        W, u, b = self.weights(layer)
        u_eff = np.clip(u, -0.6, 0.6)
        u_eff = np.where(u_eff < 0, np.minimum(u_eff, -0.2), np.maximum(u_eff, 0.2))
        ref, _ = numpy_indrnn(x, W, u_eff, b)
        self.close(layer(x), ref, _tol(np.float64, x.shape[1] + 1), "recurrent_max_abs/min_abs")
        assert np.array_equal(self.np(layer.recurrent_kernel), u), "the stored weights are not changed"

    def check_constraints_per_unit(self):
        keras = self.keras
        u0 = np.array([[-2.0, 0.3, 1.5, -0.1]])
        for constraint, expect in (
                (keras.constraints.MaxNorm(0.5), np.array([[-0.5, 0.3, 0.5, -0.1]])),
                (self.ik.RecurrentClip(0.5, 0.2), np.array([[-0.5, 0.3, 0.5, -0.2]]))):
            layer = self.ik.IndRNN(4, recurrent_constraint=constraint, dtype="float64",
                                   recurrent_initializer=keras.initializers.Constant(u0))
            model = keras.Sequential([keras.Input((6, 2)), layer, keras.layers.Dense(1)])
            model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=False)
            model.train_on_batch(np.ones((2, 6, 2)), np.ones((2, 1)))  # lr 0: only the constraint moves u
            got = self.np(layer.recurrent_kernel)
            assert np.allclose(got, expect, atol=1e-6), (type(constraint).__name__, got)

    def check_training_lowers_loss(self):
        keras = self.keras
        self.seed(0)
        rng = np.random.default_rng(0)
        x = rng.random((64, 20, 2)).astype("float32")
        y = x[:, :, 0].mean(1, keepdims=True) * 4 - 1
        model = keras.Sequential([keras.Input((20, 2)), self.ik.IndRNN(16, return_sequences=True),
                                  self.ik.IndRNN(16, dropout=0.1), keras.layers.Dense(1)])
        model.compile(keras.optimizers.Adam(1e-2), "mse")
        before = model.evaluate(x, y, verbose=0)
        model.fit(x, y, batch_size=16, epochs=8, verbose=0, shuffle=False)
        after = model.evaluate(x, y, verbose=0)
        assert after < 0.5 * before, (before, after)

    def check_save_load_and_config(self):
        keras = self.keras
        import tempfile

        self.seed(1)
        inputs = keras.Input((8, 3))
        h = keras.layers.Masking()(inputs)
        h = self.ik.IndRNN(6, return_sequences=True, recurrent_constraint=self.ik.RecurrentClip(1.1, 0.05),
                           kernel_regularizer=keras.regularizers.L2(1e-3), recurrent_init=(0.2, 0.9),
                           recurrent_max_abs=1.2, dropout=0.1)(h)
        h = self.ik.IndRNN(4, activation="tanh", go_backwards=True, use_bias=False)(h)
        h = keras.layers.RNN([self.ik.IndRNNCell(5), keras.layers.LSTMCell(3)])(
            keras.layers.RepeatVector(4)(h))
        model = keras.Model(inputs, keras.layers.Dense(2)(h))
        x = np.random.default_rng(2).random((5, 8, 3)).astype("float32")
        x[1, 5:] = 0  # a padded sequence: the Masking layer's mask reaches the IndRNN
        expected = model.predict(x, verbose=0)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            loaded = keras.saving.load_model(path)
        assert np.array_equal(loaded.predict(x, verbose=0), expected), "save/load"
        clone = keras.Model.from_config(model.get_config())
        clone.set_weights(model.get_weights())
        assert np.array_equal(clone.predict(x, verbose=0), expected), "from_config"
        for layer in model.layers:
            if isinstance(layer, self.ik.IndRNN):
                again = self.ik.IndRNN.from_config(layer.get_config())
                assert again.get_config() == layer.get_config()
        cell = self.ik.IndRNNCell(3, recurrent_max_abs=2.0, activation="sigmoid")
        assert self.ik.IndRNNCell.from_config(cell.get_config()).get_config() == cell.get_config()

    def check_masked_batch_equals_each_sequence_alone(self):
        keras = self.keras
        self.seed(2)
        lengths = [7, 3, 5, 1]
        rng = np.random.default_rng(4)
        x = rng.random((4, 7, 3)).astype("float32") + 0.1
        for b, n in enumerate(lengths):
            x[b, n:] = 0.0
        layer = self.ik.IndRNN(6, return_state=True, return_sequences=True)
        inputs = keras.Input((None, 3))
        model = keras.Model(inputs, layer(keras.layers.Masking()(inputs)))
        eager_out, eager_state = layer(x, mask=x.any(-1))
        compiled_out, compiled_state = model.predict(x, verbose=0, batch_size=4)  # jit/tf.function on jax/tf
        for b, n in enumerate(lengths):
            alone_out, alone_state = layer(x[b:b + 1, :n])
            alone_out, alone_state = self.np(alone_out)[0], self.np(alone_state)[0]
            # Keras' convention after the end: the last output repeats
            padded = np.concatenate([alone_out, np.repeat(alone_out[-1:], 7 - n, 0)])
            for what, out, state in (("eager", eager_out, eager_state), ("compiled", compiled_out, compiled_state)):
                self.close(self.np(out)[b], padded, _tol(np.float32, 8), f"{what} outputs of sequence {b}")
                self.close(self.np(state)[b], alone_state, _tol(np.float32, 8), f"{what} state of sequence {b}")

    def check_compiled_mask_with_holes(self):
        # Masking with zeros inside sequences: the traced path (argsort compaction) inside predict.
        keras = self.keras
        x, _, _ = self.problem(B=3, T=8, dtype="float32", seed=5)
        x[0, 2] = x[0, 5] = 0
        x[1, 0] = x[1, 1] = 0
        x[2, 3:] = 0
        layer = self.layer(return_sequences=True, dtype="float32")
        inputs = keras.Input((8, 3))
        model = keras.Model(inputs, layer(keras.layers.Masking()(inputs)))
        W, u, b = self.weights(layer)
        ref, _ = numpy_indrnn(x, W, u, b, mask=x.any(-1))
        self.close(model.predict(x, verbose=0), ref, _tol(np.float32, 9), "compiled holes")

    def check_stateful(self):
        keras = self.keras
        x, _, _ = self.problem(B=3, T=10)
        full = self.layer(return_sequences=True)
        stateful = self.layer(return_sequences=True, stateful=True, batch=3)
        stateful.set_weights(full.get_weights())
        first, second = self.np(stateful(x[:, :4])), self.np(stateful(x[:, 4:]))
        self.close(np.concatenate([first, second], 1), self.np(full(x)), _tol(np.float64, 11), "state carried")
        stateful.reset_state()
        assert np.all(self.np(stateful.states[0]) == 0)
        self.close(stateful(x[:, :4]), first, 0.0, "after reset_state")
        try:
            keras.Sequential([keras.Input((5, 3)), self.ik.IndRNN(4, stateful=True)])
        except ValueError as e:
            assert "batch size" in str(e), e
        else:
            raise AssertionError("stateful=True without a fixed batch size was accepted")

    def check_xla_opt_out(self):
        keras = self.keras
        layer = self.ik.IndRNN(4)
        model = keras.Sequential([keras.Input((5, 2)), layer, keras.layers.Dense(1)])
        model.compile("adam", "mse")  # jit_compile="auto"
        if self.backend == "tensorflow":
            assert layer.supports_jit is False
            model.compile("adam", "mse", jit_compile=True)  # Keras warns and compiles without XLA
            assert model.jit_compile is False
        model.fit(np.ones((4, 5, 2), "float32"), np.ones((4, 1), "float32"), verbose=0)

    def check_bidirectional(self):
        keras = self.keras
        x, _, _ = self.problem(B=2, T=6)
        layer = keras.layers.Bidirectional(self.layer(return_sequences=True), dtype="float64")
        out = self.np(layer(x))
        fw, bw = layer.forward_layer, layer.backward_layer
        ref_f, _ = numpy_indrnn(x, *self.weights(fw))
        ref_b, _ = numpy_indrnn(x, *self.weights(bw), go_backwards=True)
        self.close(out, np.concatenate([ref_f, ref_b[:, ::-1]], -1), _tol(np.float64, 7), "Bidirectional")

    def check_docs_examples(self):
        import importlib.util

        def load(name):
            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "examples", name)
            spec = importlib.util.spec_from_file_location(name[:-3], path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module

        # Encoder-decoder: teacher forcing lowers the loss; free running equals the teacher-forced model fed its
        # own predictions (asserted inside main).
        r = load("keras_seq2seq.py").main(["--t-in", "12", "--t-out", "4", "--units", "8", "--train", "256",
                                           "--epochs", "3"])
        assert r["mse_teacher_forced"] < r["mse_before"], r
        # Residual Deep IndRNN: the loss falls and every |u| stays within the paper's bound.
        r = load("keras_deep_indrnn.py").main(["--seq-len", "30", "--units", "16", "--blocks", "1", "--train",
                                               "300", "--epochs", "3"])
        assert r["loss_after"] < r["loss_before"] and r["max_abs_u"] <= r["bound"] * (1 + 1e-6), r

    def check_adding_framework(self):
        # indrnn-adding --framework keras: a few steps of the real recipe, same outputs as the other frameworks.
        import tempfile

        from indrnn_core.examples import adding

        with tempfile.TemporaryDirectory() as tmp:
            status = adding.main(["--framework", "keras", "--seq-len", "20", "--steps", "4", "--hidden", "8",
                                  "--test-size", "30", "--out", tmp, "--quiet", "--device", "cpu"])
            with open(os.path.join(tmp, "adding.json")) as f:
                summary = json.load(f)
            assert status == 0 and os.path.exists(os.path.join(tmp, "adding.csv"))
        result = summary["results"]["indrnn"]
        assert result["parameters"] == (2 * 8 + 8 + 8) + (8 * 8 + 8 + 8) + 9, result
        assert np.isfinite(result["test_mse"]) and summary["config"]["framework"] == "keras"
        # --until then --resume (weights and Adam's moments through the checkpoint) repeats the run made in one go.
        flags = ["--framework", "keras", "--seq-len", "12", "--steps", "4", "--hidden", "8", "--batch-size", "4",
                 "--test-size", "8", "--eval-every", "2", "--quiet", "--device", "cpu"]
        with tempfile.TemporaryDirectory() as whole, tempfile.TemporaryDirectory() as parts:
            assert adding.main(flags + ["--out", whole]) == 0
            assert adding.main(flags + ["--out", parts, "--until", "2"]) == 0
            assert adding.main(flags + ["--out", parts, "--resume"]) == 0
            curves = []
            for folder in (whole, parts):
                with open(os.path.join(folder, "adding.csv")) as f:
                    curves.append([line.rsplit(",", 1)[0] for line in f])  # all but the seconds column
        assert curves[0] == curves[1] and len(curves[0]) == 6, curves

    def check_benchmark_worker(self):
        # benchmarks/keras_bench.py's per-backend worker at a tiny size: gate, three models, one row each.
        import contextlib
        import io

        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
        sys.path.insert(0, root)
        try:
            from benchmarks import keras_bench
        finally:
            sys.path.remove(root)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            keras_bench.main(["--worker", "--seq-len", "12", "--batch", "4", "--hidden", "8", "--repeats", "1"])
        line = [x for x in out.getvalue().splitlines() if x.startswith(keras_bench.MARK)][-1]
        rows = json.loads(line[len(keras_bench.MARK):])
        assert [r["model"] for r in rows] == list(keras_bench.MODELS) and all(r["median_ms"] > 0 for r in rows)
        assert rows[0]["parameters"] == 8 + 8 + 8 + 9 and rows[0]["backend"] == self.backend

    def check_bad_input(self):
        ik, keras = self.ik, self.keras
        cases = [
            (lambda: ik.IndRNN(0), ValueError, "units must be a positive int"),
            (lambda: ik.IndRNN(4, activation="softmax"), ValueError, "activation must be one of"),
            (lambda: ik.IndRNN(4, dropout=1.5), ValueError, "dropout must be a number in [0, 1]"),
            (lambda: ik.IndRNN(4, recurrent_dropout=-0.1), ValueError, "recurrent_dropout must be"),
            (lambda: ik.IndRNN(4, recurrent_max_abs=0.5, recurrent_min_abs=0.8), ValueError, "exceeds the maximum"),
            (lambda: ik.IndRNN(4, recurrent_max_abs=-1), ValueError, "recurrent_bound must be None or a positive"),
            (lambda: ik.IndRNN(4, recurrent_init=(1, 0)), ValueError, "recurrent_init must be"),
            (lambda: ik.RecurrentClip(min_abs=-1), ValueError, "min_abs must be None or a float >= 0"),
            (lambda: ik.IndRNN(4)(np.ones((2, 5, 3), "float32"), mask=np.ones((2, 6), bool)), ValueError,
             "mask must have shape"),
            (lambda: ik.IndRNN(4)(np.ones((2, 5), "float32")), ValueError, "ndim"),
        ]
        for call, error, match in cases:
            try:
                call()
            except error as e:
                assert match in str(e), f"{match!r} not in {e}"
            else:
                raise AssertionError(f"no {error.__name__} ({match})")

    def run(self, only=()):
        results = {}
        for name in sorted(n for n in dir(self) if n.startswith("check_") and (not only or n in only)):
            try:
                getattr(self, name)()
                results[name] = "ok"
            except Exception:  # report every check, not only the first failure
                results[name] = traceback.format_exc()
        return results


CHECKS = sorted(n for n in dir(Checks) if n.startswith("check_"))


def _main(backend, only=()):
    os.environ["KERAS_BACKEND"] = backend
    if backend == "jax":
        os.environ["JAX_ENABLE_X64"] = "1"  # the float64 checks
    results = Checks().run(only) if backend in BACKENDS else _unsupported()
    print(RESULT_MARK + json.dumps(results))


def _unsupported():
    from indrnn_core.adapters import keras as ik

    try:
        ik.IndRNN(4)
    except ValueError as e:
        ok = all(name in str(e) for name in BACKENDS) and "numpy" in str(e)
        return {"unsupported": "ok" if ok else f"message: {e}"}
    return {"unsupported": "no error"}


# ================================================================================================================
# pytest side: one subprocess per backend, one test per (backend, check)
# ================================================================================================================
if __name__ != "__main__":
    import pytest

    _RESULTS = {}

    def _results(backend):
        if backend not in _RESULTS:
            env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0")
            proc = subprocess.run([sys.executable, __file__, backend], capture_output=True, text=True, env=env,
                                  timeout=900)
            lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
            if proc.returncode or not lines:
                _RESULTS[backend] = RuntimeError(f"the {backend} subprocess failed (exit {proc.returncode}):\n"
                                                 + proc.stdout[-4000:] + proc.stderr[-4000:])
            else:
                _RESULTS[backend] = json.loads(lines[-1][len(RESULT_MARK):])
        result = _RESULTS[backend]
        if isinstance(result, Exception):
            raise result
        return result

    @pytest.mark.parametrize("check", CHECKS)
    @pytest.mark.parametrize("backend", BACKENDS)
    def test_backend(backend, check):
        pytest.importorskip({"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}[backend])
        outcome = _results(backend)[check]
        assert outcome == "ok", outcome

    def test_unsupported_backend_names_the_supported_ones():
        assert _results("numpy")["unsupported"] == "ok"


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2:])  # python tests/test_keras.py BACKEND [check_name ...]
