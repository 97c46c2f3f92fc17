"""Activation names, the integer codes the kernels branch on, and the activation math itself, written once as
``numba.njit`` functions that both the CPU kernels and the CUDA kernels call (Numba compiles them for either)."""

import math

from numba import njit

ACT_RELU, ACT_TANH, ACT_SIGMOID, ACT_IDENTITY = 0, 1, 2, 3
ACTIVATION_CODES = {"relu": ACT_RELU, "tanh": ACT_TANH, "sigmoid": ACT_SIGMOID, "identity": ACT_IDENTITY}


@njit(inline="always")
def activate(v, act, one):
    """``act(v)``; ``one`` is 1 in the data type, so float32 math stays float32."""
    if act == ACT_RELU:
        return v * 0 if v < 0 else v  # `v < 0` is False for NaN, so NaN propagates
    if act == ACT_TANH:
        return math.tanh(v)
    if act == ACT_SIGMOID:
        return one / (one + math.exp(-v))
    return v


@njit(inline="always")
def derivative_from_output(h, act, one):
    """``act'(pre)`` from the output ``h = act(pre)``: relu h>0, tanh 1-h², sigmoid h(1-h), identity 1."""
    if act == ACT_RELU:
        return one if h > 0 else h * 0
    if act == ACT_TANH:
        return one - h * h
    if act == ACT_SIGMOID:
        return h * (one - h)
    return one
