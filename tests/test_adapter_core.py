"""The framework-neutral logic every adapter shares (``indrnn_core.layers``, ``indrnn_core.init``'s layer
policy, ``indrnn_core._validate``'s shape-only checks): tested once here, so an adapter's tests only need to show
that it calls them."""

import numpy as np
import pytest

from indrnn_core import _validate as v
from indrnn_core import init
from indrnn_core.layers import StackSpec


class Spec:
    """Shape and dtype only, like a tracer: nothing else may be read."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)


def test_runs_order_sizes_and_state_index():
    spec = StackSpec.check(3, 5, 3, bidirectional=True)
    runs = spec.runs()
    assert [r.index for r in runs] == list(range(6))
    assert [(r.layer, r.direction, r.reverse) for r in runs] == [
        (0, 0, False), (0, 1, True), (1, 0, False), (1, 1, True), (2, 0, False), (2, 1, True)]
    assert [r.input_size for r in runs] == [3, 3, 10, 10, 10, 10]
    assert spec.state_shape(7) == (6, 7, 5) and spec.output_size == 10
    one_way = StackSpec.check(3, 5, 2)
    assert [(r.index, r.input_size, r.reverse) for r in one_way.runs()] == [(0, 3, False), (1, 5, False)]
    assert spec.input_weight_bound == pytest.approx(1 / np.sqrt(5))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(input_size=0, hidden_size=2), ValueError, "input_size must be a positive int"),
    (dict(input_size=2, hidden_size=2.0), ValueError, "hidden_size must be a positive int"),
    (dict(input_size=2, hidden_size=2, num_layers=True), ValueError, "num_layers must be a positive int"),
    (dict(input_size=2, hidden_size=2, bias="tanh"), TypeError, "bias must be a bool"),
    (dict(input_size=2, hidden_size=2, bidirectional=None), TypeError, "bidirectional must be a bool"),
    (dict(input_size=2, hidden_size=2, activation="gelu"), ValueError, "activation must be one of"),
    (dict(input_size=2, hidden_size=2, dropout=1.5), ValueError, r"dropout must be a number in \[0, 1\]"),
    (dict(input_size=2, hidden_size=2, recurrent_init=(1, 0)), ValueError, "recurrent_init must be None"),
    (dict(input_size=2, hidden_size=2, num_layers=2, recurrent_init=[(0, 1)]), ValueError, "list of 2"),
    (dict(input_size=2, hidden_size=2, recurrent_bound=0), ValueError, "recurrent_bound must be None or a positive"),
])
def test_stack_spec_rejects_bad_arguments_by_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        StackSpec.check(**kwargs)


def test_recurrent_ranges_per_layer():
    assert StackSpec.check(2, 3, 2).recurrent_ranges == ((0.0, 1.0), (0.0, 1.0))
    assert StackSpec.check(2, 3, 2, recurrent_init=(0.5, 1)).recurrent_ranges == ((0.5, 1.0), (0.5, 1.0))
    bound = init.recurrent_bound(100)
    ranges = init.layer_ranges(3, bound)
    assert ranges == [(0.0, bound)] * 2 + [(1 / bound, bound)]
    assert init.layer_ranges(2, bound, long_memory_last_layer=False) == [(0.0, bound)] * 2
    assert init.layer_ranges(2) == [init.DEFAULT_RANGE] * 2
    spec = StackSpec.check(2, 3, 3, recurrent_init=ranges, recurrent_bound=bound)
    assert [spec.recurrent_range(r) for r in spec.runs()] == ranges and spec.recurrent_bound == bound
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        init.layer_ranges(0)


def test_check_signature_on_shapes_alone():
    x, u, b, h0 = Spec((7, 2, 3), "float32"), Spec((3,), "float32"), Spec((3,), "float32"), Spec((2, 3), "float32")
    assert v.check_signature(x, u, b, h0) == (7, 2, 3, np.dtype("float32"))
    assert v.check_signature(Spec((2, 7, 3), "float64"), Spec((3,), "float64"), batch_first=True)[:3] == (7, 2, 3)
    with pytest.raises(ValueError, match=r"u must have shape \(3,\)"):
        v.check_signature(x, Spec((4,), "float32"))
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 3\)"):
        v.check_signature(x, u, None, Spec((3, 3), "float32"))
    with pytest.raises(TypeError, match="all arrays must share one dtype"):
        v.check_signature(x, Spec((3,), "float64"))
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        v.check_signature(Spec((7, 2, 3), "int32"), u)
    with pytest.raises(ValueError, match="x must be 3-D"):
        v.check_signature(Spec((7, 3), "float32"), u)
    with pytest.raises(ValueError, match="activation must be one of"):
        v.check_signature(x, u, activation="elu")
    with pytest.raises(TypeError, match="reverse must be a bool"):
        v.check_signature(x, u, reverse="yes")


def test_lengths_checked_as_far_as_known():
    x, u = Spec((7, 2, 3), "float32"), Spec((3,), "float32")
    v.check_signature(x, u, lengths=np.array([7, 0]))
    v.check_signature(x, u, lengths=Spec((2,), "int32"))  # traced: values checked where the kernel runs
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 7\]"):
        v.check_signature(x, u, lengths=[8, 1])
    with pytest.raises(TypeError, match="lengths must have an integer dtype"):
        v.check_signature(x, u, lengths=Spec((2,), "float32"))
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        v.check_signature(x, u, lengths=Spec((3,), "int64"))
    with pytest.raises(TypeError, match="lengths must be a sequence or array of integers"):
        v.check_signature(x, u, lengths=3)


def test_output_and_gradient_shapes():
    assert v.output_shapes((7, 2, 3), False) == ((7, 2, 3), (2, 3))
    assert v.output_shapes((2, 7, 3), True) == ((2, 7, 3), (2, 3))
    assert v.gradient_shapes((2, 7, 3), True) == ((2, 7, 3), (3,), (3,), (2, 3))
