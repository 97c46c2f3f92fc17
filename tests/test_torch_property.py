"""The torch adapter through the project's own public checker: random problems (every option, both dtypes, lengths
with zeros, optional b/h0/grad_hn) against the reference and finite differences, on the eager route and on the
registered ops. This is also how a user wraps any framework for ``indrnn_core.testing.check_gradients``."""
import numpy as np
import pytest
from hypothesis import given, settings

import torch

from indrnn_core.adapters import torch as adapter
from indrnn_core.adapters.torch import indrnn, indrnn_with_state
from indrnn_core.testing import check_gradients, nan_like, problems


def _tensor(a, requires_grad=False):
    return None if a is None else torch.from_numpy(np.array(a)).requires_grad_(requires_grad)


def torch_forward(x, u, b, h0, **options):
    return indrnn(_tensor(x), _tensor(u), _tensor(b), _tensor(h0), **options).numpy()


def torch_vjp(x, u, b, h0, grad_h, grad_hn, **options):
    inputs = [_tensor(a, requires_grad=True) for a in (x, u, b, h0)]
    h, h_n = indrnn_with_state(*inputs, **options)
    outputs, cotangents = [h], [_tensor(grad_h)]
    if grad_hn is not None:
        outputs.append(h_n)
        cotangents.append(_tensor(grad_hn))
    present = [t for t in inputs if t is not None]
    grads = iter(torch.autograd.grad(outputs, present, cotangents, allow_unused=True))
    return tuple(None if t is None else next(grads).numpy() for t in inputs)


@pytest.mark.parametrize("route", ["eager", "op"])
@settings(max_examples=25, deadline=None)
@given(problem=problems())
def test_adapter_passes_the_public_checker(route, problem):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(adapter, "_empty", lambda shape, like: _nan_output(shape, like))
        if route == "op":
            patch.setattr(adapter, "_eager", lambda *tensors: False)
        report = check_gradients(torch_forward, torch_vjp, problem)
    assert report.ok, report


def _nan_output(shape, like):
    """Every buffer the kernels fill starts as NaN: an unwritten element fails the check."""
    a = nan_like(np.empty(tuple(shape), dtype=np.float32 if like.dtype == torch.float32 else np.float64))
    return torch.from_numpy(a), a
