"""Thin framework adapters over the indrnn_core kernels (``indrnn_core.adapters.torch``, ...).

Each adapter is imported on its own and imports its framework; this package imports nothing.
"""
