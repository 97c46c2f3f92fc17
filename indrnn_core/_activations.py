"""Activation names, the integer codes the kernels take, and the activation math itself, written once as
``numba.njit`` functions that both the CPU kernels and the CUDA kernels call (Numba compiles them for either).

``one`` is 1 in the data type, so float32 math stays float32. Derivatives are computed from the output
``h = act(pre)``, so backward never needs the input.
"""

import math

from numba import njit

ACT_RELU, ACT_TANH, ACT_SIGMOID, ACT_IDENTITY = 0, 1, 2, 3
ACTIVATION_CODES = {"relu": ACT_RELU, "tanh": ACT_TANH, "sigmoid": ACT_SIGMOID, "identity": ACT_IDENTITY}


@njit(inline="always")
def relu(v, one):
    # `v < 0` is False for NaN, so NaN propagates; -inf gives 0, as in the reference (np.maximum(v, 0)) and torch.
    # `one - one`, not the literal 0: an integer literal would make a float32 chain float64 in Numba. A select of a
    # constant, not v * 0 (which gave NaN for -inf): one operation fewer a step, 11% off the lanes forward's first
    # pass (AMD EPYC, T = 10^6, B = H = 1, one thread).
    return one - one if v < 0 else v


@njit(inline="always")
def relu_derivative(h, one):
    return one if h > 0 else one - one


@njit(inline="always")
def tanh(v, one):
    return math.tanh(v)


@njit(inline="always")
def tanh_derivative(h, one):
    return one - h * h


@njit(inline="always")
def sigmoid(v, one):
    return one / (one + math.exp(-v))


@njit(inline="always")
def sigmoid_derivative(h, one):
    return h * (one - h)


@njit(inline="always")
def identity(v, one):
    return v


@njit(inline="always")
def identity_derivative(h, one):
    return one


@njit(inline="always")
def activate(v, act, one):
    """``act(v)`` for an activation code, element by element (the CUDA kernels: the branch is warp-uniform)."""
    if act == ACT_RELU:
        return relu(v, one)
    if act == ACT_TANH:
        return tanh(v, one)
    if act == ACT_SIGMOID:
        return sigmoid(v, one)
    return identity(v, one)


@njit(inline="always")
def derivative_from_output(h, act, one):
    """``act'(pre)`` from the output ``h = act(pre)``: relu h>0, tanh 1-h², sigmoid h(1-h), identity 1."""
    if act == ACT_RELU:
        return relu_derivative(h, one)
    if act == ACT_TANH:
        return tanh_derivative(h, one)
    if act == ACT_SIGMOID:
        return sigmoid_derivative(h, one)
    return identity_derivative(h, one)


@njit(inline="always")
def flush_subnormal(v, tiny):
    """0 for |v| below the smallest normal number ``tiny``, else v (NaN kept); one comparison and a select, so it
    vectorises. The CPU kernels apply it to every carried product of |u| < 1 factors: where the loss reads only
    late steps (a classifier on the final state) dL/dh travels back alone, multiplied by |u| at every step, and
    decays through the subnormal range, where each operation costs ~100 cycles on x86 unless the thread flushes
    them (TensorFlow's and XLA's threads do; torch's and NumPy's callers do not): a backward at T=784, B=64, H=128
    took 79 ms against 12 ms flushed (one thread). Its contribution there is below any rounding of the sums it
    feeds."""
    return tiny - tiny if abs(v) < tiny else v  # tiny - tiny: 0 in v's dtype, a constant (see relu)


# ---- the time-parallel kernels' composed maps (CPU and CUDA) ------------------------------------------------------
@njit(inline="always")
def map_ok(kk, mm, lo, hi):
    """Whether a segment's composed forward map ``h -> clip(k*h + m, lo, hi)`` can be applied: k and m finite, the
    bounds not NaN. With |u| > 1 the coefficients grow like |u|**steps and overflow (to inf, and inf*0 or inf - inf
    to NaN) even where the chain itself stays small (a relu clipping it, or zeros); such a segment's end is then
    walked with the step formula instead (the scan kernels' boundaries)."""
    return math.isfinite(kk) and math.isfinite(mm) and not (math.isnan(lo) or math.isnan(hi))


@njit(inline="always")
def carry_map_ok(a, m):
    """``map_ok`` for a backward map ``carry -> A*carry + M``."""
    return math.isfinite(a) and math.isfinite(m)
