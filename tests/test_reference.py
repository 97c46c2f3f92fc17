"""The reference is the spec: check it against element-wise finite differences and hand-worked values."""

import numpy as np
import pytest

from indrnn_core import reference


def numeric_gradient(f, a, eps=1e-6):
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        up = f()
        a[i] = old - eps
        down = f()
        a[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


@pytest.mark.parametrize("activation", reference.ACTIVATIONS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths", [None, [4, 0, 2]])
def test_backward_is_the_gradient_of_forward(activation, reverse, batch_first, lengths):
    rng = np.random.default_rng(0)
    T, B, H = 4, 3, 2
    shape = (B, T, H) if batch_first else (T, B, H)
    # |pre| stays away from relu's kink at 0 by construction: x far from 0, small recurrent weights
    x = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 1.0, shape)
    u, b, h0 = rng.uniform(-0.2, 0.2, H), rng.uniform(-0.1, 0.1, H), rng.uniform(-0.5, 0.5, (B, H))
    gh, ghn = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, (B, H))
    opts = dict(activation=activation, batch_first=batch_first, lengths=lengths, reverse=reverse)

    def loss():
        h = reference.forward(x, u, b, h0, **opts)
        hn = reference.final_state(h, h0, lengths, reverse, batch_first)
        return np.sum(h * gh) + np.sum(hn * ghn)

    h = reference.forward(x, u, b, h0, **opts)
    gx, gu, gb, gh0 = reference.backward(gh, h, u, h0, grad_hn=ghn, **opts)
    for name, analytic, arg in (("x", gx, x), ("u", gu, u), ("b", gb, b), ("h0", gh0, h0)):
        np.testing.assert_allclose(analytic, numeric_gradient(loss, arg), rtol=1e-6, atol=1e-8, err_msg=name)


def test_hand_worked_relu_with_lengths_and_reverse():
    # one unit, u = 2, b = 0; sequence 0 has x = 1, -1, 2 (length 3), sequence 1 has x = 5 (length 1)
    x = np.array([[1.0, 5.0], [-1.0, 9.0], [2.0, 9.0]])[:, :, None]  # [T=3, B=2, H=1]
    u = np.array([2.0])
    h = reference.forward(x, u, lengths=[3, 1])  # 1, relu(-1 + 2) = 1, relu(2 + 2) = 4
    np.testing.assert_array_equal(h[:, :, 0], [[1.0, 5.0], [1.0, 0.0], [4.0, 0.0]])
    np.testing.assert_array_equal(reference.final_state(h, lengths=[3, 1])[:, 0], [4.0, 5.0])
    h = reference.forward(x, u, lengths=[3, 1], reverse=True)  # visits t = 2, 1, 0: 2, relu(-1 + 4) = 3, 7
    np.testing.assert_array_equal(h[:, :, 0], [[7.0, 5.0], [3.0, 0.0], [2.0, 0.0]])
    np.testing.assert_array_equal(reference.final_state(h, lengths=[3, 1], reverse=True)[:, 0], [7.0, 5.0])


def test_unknown_activation():
    with pytest.raises(ValueError, match="activation must be one of"):
        reference.activate(np.zeros(1), "gelu")
