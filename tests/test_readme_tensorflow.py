"""The README's TensorFlow example, run as written."""

import pathlib
import re

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")


def test_readme_tensorflow_example_runs_as_written():
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## TensorFlow (`indrnn_core.adapters.tensorflow`)"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope = {}
    tf.random.set_seed(0)
    exec(compile(code, "README.md (TensorFlow example)", "exec"), scope)
    assert np.isfinite(scope["loss"]) and scope["loss"] > 0
