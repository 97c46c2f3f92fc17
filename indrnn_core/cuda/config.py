"""Launch configuration, read at every call so tests can shrink it (tiny inputs then span several blocks)."""

THREADS_PER_BLOCK = 256

# The sequential kernels: the block-tiled ones (loader warps stream tiles through shared memory while one warp runs
# the chain) for inputs of at most this many columns B x H, one thread per column with CHUNK loads ahead above it.
# Measured on an H200 (python -m benchmarks.cuda_variants, 2026-11-27), fwd+bwd tiled / columns: 0.44-0.68x at
# B x H = 256-8192 (T = 784-10^5), 1.0x at 16384, 1.7-2.3x at 32768-262144 (T=1000), where the column kernels
# already fill the GPU.
TILED_MAX_COLUMNS = 8192
