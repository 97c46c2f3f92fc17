"""indrnn-core: the IndRNN recurrence ``h_t = act(x_t + u * h_{t-1} + b)`` written once as Numba kernels.

    forward(x, u, b=None, h0=None, *, activation="relu", batch_first=False, lengths=None, reverse=False,
            out=None, stream=None) -> h                     # x, h: [T, B, H]
    backward(grad_h, h, u, h0=None, *, ..., grad_hn=None, out=None, stream=None) -> (gx, gu, gb, gh0)
    final_state(h, h0=None, lengths=None, reverse=False, batch_first=False) -> [B, H]

NumPy arrays run on the CPU kernels (``indrnn_core.cpu``); CUDA arrays (``__cuda_array_interface__``) on the CUDA
kernels (``indrnn_core.cuda``, imported only when needed). ``indrnn_core.reference`` is the float64 NumPy spec,
``indrnn_core.init`` has the papers' initialisation and clipping of ``u``, ``indrnn_core.testing`` has hypothesis
strategies and a gradient checker, ``indrnn_core.adapters`` the framework skins. Large CPU outputs allocated here
come from ``indrnn_core.host_cache``, which reuses the memory of dead ones (see ``indrnn_core._host_cache``).
Importing this package imports no framework and not ``numba.cuda``.
"""

from . import init, reference
from ._dispatch import backward, final_state, forward
from ._host_cache import host_cache

__version__ = "0.1.0"
__all__ = ["forward", "backward", "final_state", "reference", "init", "host_cache"]
