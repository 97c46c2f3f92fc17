"""CPU kernels (``numba.njit``) for the IndRNN recurrence. Called by ``indrnn_core.forward``/``backward`` after
validation; the launchers here assume valid, time-major arrays."""

from .recurrence import backward_into, forward_into

__all__ = ["forward_into", "backward_into"]
