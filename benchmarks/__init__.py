"""Benchmarks of the IndRNN recurrence: ``python -m benchmarks --help`` (run from the repository root).

Modules: ``configs`` (named shapes), ``core_bench`` (the kernels vs the memory-bandwidth floor; shared timing and
machine-header helpers), ``jax_bench`` (the ``jax.lax.scan`` peer), ``torch_bench`` (PyTorch layers, when
present), ``report`` (JSON -> tables, plots, BENCHMARKS.md). Each suite exposes ``run(...) -> list[dict]`` rows
with at least ``suite, impl, config, T, B, H, dtype, device, mode, median_ms``.
"""
