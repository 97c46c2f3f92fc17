"""Launch configuration, read at every call so tests can shrink it (tiny inputs then span several blocks)."""

THREADS_PER_BLOCK = 256
