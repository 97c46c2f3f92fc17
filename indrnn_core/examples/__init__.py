"""Runnable examples: the adding problem and real-data sequence classification with IndRNN.

Each module has a ``main(argv=None)`` and runs as ``python -m indrnn_core.examples.<name> --help``:

- ``adding``: the adding problem (console script ``indrnn-adding``), optionally beside an LSTM.
- ``digits``: scikit-learn's 8x8 handwritten digits read pixel by pixel (T=64), the offline cousin of pixel MNIST.
- ``vowels``: JapaneseVowels from the UEA archive (bundled with ``aeon``): variable-length multivariate sequences fed
  as a ``PackedSequence``.
- ``mnist``: sequential / permuted pixel MNIST (T=784) from an ``mnist.npz`` you supply, with the paper's recipe.

They need the ``examples`` extra: ``pip install 'indrnn-core[examples]'``. Importing this package imports nothing
heavy; each example imports its framework only after its command line has been checked.
"""
