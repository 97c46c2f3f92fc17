"""The specification: plain NumPy float64 loops for the IndRNN recurrence, forward and backward.

Everything here is written for clarity, not speed; the kernels in ``indrnn_core.cpu`` and ``indrnn_core.cuda``
are tested against it, and it is tested against finite differences.

Notation: ``T`` steps, ``B`` sequences, ``H`` hidden units. Arrays are time-major ``[T, B, H]`` unless
``batch_first=True`` (``[B, T, H]``).

    pre_t = x_t + u * h_{t-1} + b        h_t = act(pre_t)        h_{-1} = h0 (zeros when None)

Sequence ``b`` runs over its first ``lengths[b]`` steps (in reverse order when ``reverse=True``); outputs past
its end are 0 and get no gradient.
"""

import numpy as np

ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")


def activate(pre, activation):
    """``act(pre)`` element-wise."""
    if activation == "relu":
        return np.maximum(pre, 0.0)
    if activation == "tanh":
        return np.tanh(pre)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-pre))
    if activation == "identity":
        return pre.copy()
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def activation_derivative(h, activation):
    """``act'(pre)`` written in terms of the output ``h = act(pre)``: backward never needs ``x``."""
    if activation == "relu":
        return (h > 0).astype(h.dtype)
    if activation == "tanh":
        return 1.0 - h * h
    if activation == "sigmoid":
        return h * (1.0 - h)
    if activation == "identity":
        return np.ones_like(h)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def _time_major(a, batch_first):
    return None if a is None else (np.swapaxes(a, 0, 1) if batch_first else a)


def _steps(length, reverse):
    """The time indices of one sequence, in the order the recurrence visits them."""
    return range(length - 1, -1, -1) if reverse else range(length)


def _lengths(lengths, T, B):
    return np.full(B, T, dtype=np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)


def forward(x, u, b=None, h0=None, *, activation="relu", batch_first=False, lengths=None, reverse=False):
    """All outputs ``h``: same shape as ``x`` ([T, B, H] or [B, T, H]), float64."""
    return _run(x, u, b, h0, activation, batch_first, lengths, reverse)[0]


def preactivation(x, u, b=None, h0=None, *, activation="relu", batch_first=False, lengths=None, reverse=False):
    """``pre_t = x_t + u * h_{t-1} + b`` at every step (0 past each sequence's end), shaped like ``x``; used to
    keep finite differences away from an activation's kinks."""
    return _run(x, u, b, h0, activation, batch_first, lengths, reverse)[1]


def _run(x, u, b, h0, activation, batch_first, lengths, reverse):
    x = _time_major(np.asarray(x, dtype=np.float64), batch_first)
    T, B, H = x.shape
    u = np.asarray(u, dtype=np.float64)
    b = np.zeros(H) if b is None else np.asarray(b, dtype=np.float64)
    h0 = np.zeros((B, H)) if h0 is None else np.asarray(h0, dtype=np.float64)
    lengths = _lengths(lengths, T, B)
    h = np.zeros((T, B, H))
    pre = np.zeros((T, B, H))
    for n in range(B):
        prev = h0[n]
        for t in _steps(lengths[n], reverse):
            pre[t, n] = x[t, n] + u * prev + b
            prev = h[t, n] = activate(pre[t, n], activation)
    if batch_first:
        return np.swapaxes(h, 0, 1), np.swapaxes(pre, 0, 1)
    return h, pre


def final_state(h, h0=None, lengths=None, reverse=False, batch_first=False):
    """Each sequence's last state ``[B, H]``: the output at its last visited step (``h0`` when its length is 0)."""
    h = _time_major(np.asarray(h), batch_first)
    T, B, H = h.shape
    lengths = _lengths(lengths, T, B)
    hn = np.zeros((B, H), dtype=h.dtype) if h0 is None else np.array(h0, dtype=h.dtype)
    for n in range(B):
        if lengths[n] > 0:
            hn[n] = h[0 if reverse else lengths[n] - 1, n]
    return hn


def backward(grad_h, h, u, h0=None, *, activation="relu", batch_first=False, lengths=None, reverse=False,
             grad_hn=None):
    """Gradients ``(gx, gu, gb, gh0)`` of a loss, given ``grad_h = dL/dh`` for every output and ``grad_hn`` for
    the final state (see ``final_state``). ``gx`` is also the gradient of the pre-activation. float64."""
    grad_h = _time_major(np.asarray(grad_h, dtype=np.float64), batch_first)
    h = _time_major(np.asarray(h, dtype=np.float64), batch_first)
    T, B, H = h.shape
    u = np.asarray(u, dtype=np.float64)
    h0 = np.zeros((B, H)) if h0 is None else np.asarray(h0, dtype=np.float64)
    lengths = _lengths(lengths, T, B)
    gx = np.zeros((T, B, H))
    gu = np.zeros(H)
    gh0 = np.zeros((B, H)) if grad_hn is None else np.array(grad_hn, dtype=np.float64)
    for n in range(B):
        visited = list(_steps(lengths[n], reverse))
        carry = gh0[n]  # dL/dh at the current step from later steps (and from the final state)
        for i in reversed(range(len(visited))):
            t = visited[i]
            prev = h0[n] if i == 0 else h[visited[i - 1], n]
            gpre = (grad_h[t, n] + carry) * activation_derivative(h[t, n], activation)
            gx[t, n] = gpre
            gu += gpre * prev
            carry = gpre * u
        gh0[n] = carry
    gb = gx.sum(axis=(0, 1))
    return (np.swapaxes(gx, 0, 1) if batch_first else gx), gu, gb, gh0
