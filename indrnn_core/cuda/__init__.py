"""CUDA kernels (``numba.cuda``) for the IndRNN recurrence: the only package that imports ``numba.cuda``.

Reached through ``indrnn_core.forward``/``backward`` when the data are CUDA arrays; the launchers here assume
validated inputs. Under ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in Numba's simulator on the CPU.
"""

import numpy as _np

if not hasattr(_np, "row_stack"):
    # numba-cuda 0.30.x registers an overload of np.row_stack while compiling its first kernel, and NumPy 2.5
    # removed that alias of vstack: every launch then fails with AttributeError. Restore the (identical) alias.
    _np.row_stack = _np.vstack

from .recurrence import (as_device_array, backward_into, copy_to_host, device_empty, final_state_into,
                         forward_into, is_capturing, require_gpu)
from .scan import backward_into as scan_backward_into, forward_into as scan_forward_into

__all__ = ["as_device_array", "backward_into", "copy_to_host", "device_empty", "final_state_into", "forward_into",
           "is_capturing", "require_gpu", "scan_backward_into", "scan_forward_into"]
