"""CUDA kernels (``numba.cuda``) for the IndRNN recurrence: the only package that imports ``numba.cuda``.

Reached through ``indrnn_core.forward``/``backward`` when the data are CUDA arrays; the launchers here assume
validated inputs. Under ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in Numba's simulator on the CPU.
"""

from .recurrence import (as_device_array, backward_into, copy_to_host, device_empty, final_state_into,
                         forward_into, require_gpu)

__all__ = ["as_device_array", "backward_into", "copy_to_host", "device_empty", "final_state_into", "forward_into",
           "require_gpu"]
