"""The authors' networks (github.com/Sunnydreamrain/IndRNN_pytorch), rebuilt from the torch adapter's modules:
parameter counts against the counts their training scripts logged, values and gradients against a plain-PyTorch
loop of the same math, the per-step batch norm against a table of ``nn.BatchNorm1d`` (the authors' own form), and
the recurrent-weight bounds (maximum and minimum |u|)."""
import numpy as np
import pytest

import torch
from torch import nn

from indrnn_core import init
from indrnn_core.adapters.torch import (
    BatchNormOverTime, BatchNormPerStep, DenseIndRNN, IndRNN, IndRNNCell, IndRNNRecurrence, ResidualIndRNN,
    SequenceDropout, clip_recurrent_weights_, register_recurrent_clipping,
)
from indrnn_core.layers import StackSpec

F64 = torch.float64


def count(*modules) -> int:
    """Distinct parameters (a tied weight once), as the authors' scripts count them."""
    return sum(p.numel() for p in {id(p): p for m in modules for p in m.parameters()}.values())


def tolerance(dtype, reduction: int, depth: int, scale: float = 1.0) -> dict:
    """assert_close tolerances for results of ``depth`` stacked operations whose longest reduction sums
    ``reduction`` terms, of magnitude up to ``scale``: each sum's rounding error grows at most linearly with its
    length, each operation adds its own (x 8 for the divisions and square roots of a batch norm on the way), and a
    result that cancels (a batch norm's input gradients sum to ~0) keeps the absolute error of its terms."""
    bound = 8 * depth * reduction * torch.finfo(dtype).eps
    return dict(rtol=bound, atol=bound * max(1.0, float(scale)))


# ----------------------------------------------------------------------------------------- the official networks
class PlainIndRNN(nn.Module):
    """The authors' plain network (``stackedIndRNN_encoder``) from the adapter's pieces: per layer Linear ->
    recurrence (no bias) -> batch norm ("after") -> sequence dropout; a classifier on the last step."""

    def __init__(self, input_size, hidden_size, num_layers, num_classes, dropout=0.0):
        super().__init__()
        sizes = [input_size] + [hidden_size] * num_layers
        self.linears = nn.ModuleList(nn.Linear(a, hidden_size) for a in sizes[:-1])
        self.recurrences = nn.ModuleList(IndRNNRecurrence(hidden_size, bias=False) for _ in range(num_layers))
        self.norms = nn.ModuleList(BatchNormOverTime(hidden_size) for _ in range(num_layers))
        self.drop = SequenceDropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        for linear, recurrence, norm in zip(self.linears, self.recurrences, self.norms):
            x = self.drop(norm(recurrence(linear(x))[0]))
        return self.classifier(x[-1])


def pixel_mnist_residual():
    bound = init.recurrent_bound(784, 5.0)
    return (ResidualIndRNN(1, 128, num_blocks=5, dropout=0.1, bn_location="after", final_dropout=0.1,
                           recurrent_init=init.hidden_range(bound), recurrent_bound=bound,
                           last_recurrent_init=init.last_layer_range(bound)), nn.Linear(128, 10))


def pixel_mnist_dense():
    bound = init.recurrent_bound(784, 5.0)
    net = DenseIndRNN(1, growth_rate=16, block_layers=(8, 6, 4), first_multiplier=6, dropout=(0.2, 0.2, 0.1, 0.1),
                      last_transition=True, recurrent_init=init.hidden_range(bound), recurrent_bound=bound,
                      last_recurrent_init=init.last_layer_range(bound))
    return net, nn.Linear(net.out_features, 10)


def word_ptb_residual():
    """The authors' word-PTB residual network (bn "before", 5 blocks of 2000 units, embedding 600 tied to the
    decoder): the residual stack, then their last Linear -> BN -> IndRNN -> extra BN at the embedding size."""
    embed, hidden, vocab = 600, 2000, 10000
    encoder = nn.Embedding(vocab, embed)
    stack = ResidualIndRNN(embed, hidden, num_blocks=5, bn_location="before", output_norm=False,
                           final_dropout=0.5, recurrent_init=(0.0, 0.99), recurrent_bound=0.99)
    head = nn.ModuleList([nn.Linear(hidden, embed), BatchNormOverTime(embed),
                          IndRNNRecurrence(embed, bias=False, recurrent_init=(0.0, 0.99), recurrent_bound=0.99),
                          BatchNormOverTime(embed)])
    decoder = nn.Linear(embed, vocab)
    decoder.weight = encoder.weight
    return encoder, stack, head, decoder


# Parameter counts the authors' training scripts printed ("Model total parameters") in the logs they published.
OFFICIAL_COUNTS = {
    # pixelMNIST/result/9904_plain_logindrnn_6layers_128_drop1_bs32_consU_pThre100_inilasth_save.log
    "pixel-MNIST plain 6x128": (lambda: (PlainIndRNN(1, 128, 6, 10, dropout=0.1),), 86410),
    # pixelMNIST/result/9940_reslogindrnn_5blocks_128_drop1_bs32_consU_pThre100_preact_inilasth_save.log
    "pixel-MNIST residual 5 blocks x 128": (pixel_mnist_residual, 170890),
    # pixelMNIST/result/9946_denselogindrnn_864_first6_grow16_drop21121_bs32_consU_inilast_pThre100_save.log
    "pixel-MNIST dense (8,6,4) k=16": (pixel_mnist_dense, 256514),
    # PTB/results/5802_res_logwordptb_wtying_lr2e4_5blocks_2000_drop45_last5_65652_..._bnbefore.log
    "word-PTB residual 5 blocks x 2000": (word_ptb_residual, 48501600),
}


@pytest.mark.parametrize("name", list(OFFICIAL_COUNTS))
def test_official_parameter_counts(name):
    build, want = OFFICIAL_COUNTS[name]
    with torch.device("meta"):  # counts only: nothing allocated, nothing initialised
        modules = build()
    assert count(*modules) == want
    recurrences = [m for module in modules for m in module.modules() if isinstance(m, IndRNNRecurrence)]
    assert recurrences and all(r.bias is None for r in recurrences)  # u only, as the authors' IndRNN_onlyrecurrent


def test_official_dense_network_shape():
    net, _ = pixel_mnist_dense()
    # 96 first; +8*16 = 224 -> 112; +6*16 = 208 -> 104; +4*16 = 168 -> the last transition halves it: 84
    assert net.out_features == 84
    transitions = [layer for layer in net.layers if hasattr(layer, "linear")]
    assert [t.linear.out_features for t in transitions] == [96, 112, 104, 84]
    assert net.layers[-1].drop.p == 0.1  # the last transition drops at the transition rate


def test_last_layer_init_only_on_the_final_recurrence():
    torch.manual_seed(0)
    bound = init.recurrent_bound(784, 5.0)
    low, high = init.last_layer_range(bound)
    for net in (pixel_mnist_residual()[0], pixel_mnist_dense()[0]):
        *hidden, last = [m for m in net.modules() if isinstance(m, IndRNNRecurrence)]
        assert low <= last.weight_hh.min() and last.weight_hh.max() <= high
        assert all(0 <= r.weight_hh.min() and r.weight_hh.max() <= bound for r in hidden)
        assert min(r.weight_hh.min() for r in hidden) < low  # the hidden ones start near 0, the last does not


def test_bad_block_options():
    with pytest.raises(ValueError, match="bn_location"):
        ResidualIndRNN(2, 4, bn_location="bn_after")
    with pytest.raises(ValueError, match="bn_location"):
        DenseIndRNN(2, growth_rate=2, block_layers=(1,), bn_location="middle")
    with pytest.raises(ValueError, match="output_norm"):
        ResidualIndRNN(2, 4, bn_location="after", output_norm=True)
    with pytest.raises(ValueError, match="recurrent_init"):
        ResidualIndRNN(2, 4, last_recurrent_init=(1.0, 0.5))


# ------------------------------------------------------------------------------- the same math as a plain loop
def loop_recurrence(x, u):
    h, out = torch.zeros_like(x[0]), []
    for x_t in x:
        h = torch.relu(x_t + u * h)
        out.append(h)
    return torch.stack(out)


def loop_norm(x, bn, training):
    if training:
        mean, var = x.mean((0, 1)), x.var((0, 1), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias


def loop_drop(x, p, training):
    """One mask per sequence and feature, drawn as SequenceDropout draws it (so the same seed gives the same one)."""
    if not training or p == 0:
        return x
    return x * torch.empty((1, *x.shape[1:]), dtype=x.dtype).bernoulli_(1 - p) / (1 - p)


def loop_recurrence_with_norm(x, layer, training):
    """The authors' IndRNNwithBN: batch norm before or after the recurrence."""
    if layer.bn_before:
        return loop_recurrence(loop_norm(x, layer.norm, training), layer.recurrence.weight_hh)
    return loop_norm(loop_recurrence(x, layer.recurrence.weight_hh), layer.norm, training)


def loop_residual(net, x, training, p, p_final):
    y = x @ net.projection.weight.T + net.projection.bias
    for block in net.blocks:
        z = y
        for layer, linear in zip(block.recurrences, block.linears):
            z = loop_drop(loop_recurrence_with_norm(z, layer, training), p, training) @ linear.weight.T + linear.bias
        y = y + z
    y = loop_recurrence_with_norm(y, net.final, training)
    if net.output_norm is not None:
        y = loop_norm(y, net.output_norm, training)
    return loop_drop(y, p_final, training)


def loop_layer(layer, x, training):
    y = x @ layer.linear.weight.T + layer.linear.bias
    return loop_drop(loop_recurrence_with_norm(y, layer.recurrence, training), layer.drop.p, training)


def loop_dense(net, x, training):
    for layer in net.layers:
        if hasattr(layer, "bottleneck"):
            x = torch.cat([x, loop_layer(layer.growth, loop_layer(layer.bottleneck, x, training), training)], -1)
        else:
            x = loop_layer(layer, x, training)
    return x


T, B, IN = 7, 4, 3


def _check_against_loop(net, loop, depth):
    """Values and every gradient of ``net`` against ``loop`` (same weights), in training (batch statistics,
    dropout with the same masks) and eval mode (running statistics, no dropout)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, IN, generator=gen, dtype=F64)
    with torch.no_grad():  # non-trivial affine parameters (they start at 1 and 0)
        for m in net.modules():
            if isinstance(m, BatchNormOverTime):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.5, 0.5, generator=gen)
    for training in (True, False):
        net.train(training)
        xs = [x.clone().requires_grad_() for _ in range(2)]
        torch.manual_seed(7)
        got = net(xs[0])
        weights = torch.randn(got.shape, generator=gen, dtype=F64)
        torch.manual_seed(7)
        want = loop(net, xs[1], training)
        torch.testing.assert_close(got, want, **tolerance(F64, T * B, depth, want.detach().abs().max()))
        results = []
        for out, inp in ((got, xs[0]), (want, xs[1])):
            net.zero_grad()
            (out * weights).sum().backward()
            results.append({"input": inp.grad, **{n: p.grad.clone() for n, p in net.named_parameters()}})
        for name, want_grad in results[1].items():  # the backward pass runs the network's depth once more
            torch.testing.assert_close(results[0][name], want_grad, msg=name,
                                       **tolerance(F64, T * B, 2 * depth, want_grad.abs().max()))


@pytest.mark.parametrize("bn_location", ["before", "after"])
@pytest.mark.parametrize("output_norm", [None, False], ids=["default-output-norm", "no-output-norm"])
def test_residual_matches_plain_loop(bn_location, output_norm):
    if bn_location == "after" and output_norm is False:
        output_norm = None  # (the same network)
    torch.manual_seed(0)
    net = ResidualIndRNN(IN, 5, num_blocks=2, dropout=0.25, bn_location=bn_location, output_norm=output_norm,
                         final_dropout=0.5, recurrent_init=(0.2, 0.9)).double()
    assert (net.output_norm is not None) == (bn_location == "before" and output_norm is None)
    _check_against_loop(net, lambda n, x, training: loop_residual(n, x, training, 0.25, 0.5), depth=8)


@pytest.mark.parametrize("bn_location", ["before", "after"])
@pytest.mark.parametrize("last_transition", [False, True])
def test_dense_matches_plain_loop(bn_location, last_transition):
    torch.manual_seed(0)
    net = DenseIndRNN(IN, growth_rate=2, block_layers=(2, 1), bottleneck=2, first_multiplier=3,
                      dropout=(0.2, 0.3, 0.1, 0.4), bn_location=bn_location, last_transition=last_transition,
                      recurrent_init=(0.2, 0.9)).double()
    _check_against_loop(net, loop_dense, depth=10)


def test_official_blocks_train_with_lengths_and_batch_first():
    """The new options keep the blocks' padding and layout guarantees (eval: each sequence alone)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 3, IN, generator=gen, dtype=F64)
    lengths = torch.tensor([6, 2, 4])
    torch.manual_seed(3)
    for net in (ResidualIndRNN(IN, 4, num_blocks=1, bn_location="after", final_dropout=0.2).double(),
                DenseIndRNN(IN, growth_rate=2, block_layers=(1, 1), bn_location="before",
                            last_transition=True).double()):
        net.eval()
        y = net(x, lengths)
        for n, length in enumerate(lengths.tolist()):
            torch.testing.assert_close(y[:length, n], net(x[:length, n:n + 1])[:, 0])
            assert torch.all(y[length:, n] == 0)


# ---------------------------------------------------------------------------------------- per-step batch norm
def official_per_step_table(num_features, max_steps, momentum):
    """The authors' form of it: one nn.BatchNorm1d per step sharing one affine pair; a step at or past the table's
    end uses its last entry."""
    bns = nn.ModuleList(nn.BatchNorm1d(num_features, momentum=momentum, dtype=F64) for _ in range(max_steps))
    for bn in bns[1:]:
        bn.weight, bn.bias = bns[0].weight, bns[0].bias
    return bns


def run_table(bns, x, start):
    return torch.stack([bns[min(start + t, len(bns) - 1)](x_t) for t, x_t in enumerate(x)])


@pytest.mark.parametrize("momentum", [0.3, None], ids=["momentum", "cumulative"])
def test_batch_norm_per_step_equals_the_official_table(momentum):
    L, C = 5, 3
    ours, table = BatchNormPerStep(C, L, momentum=momentum, dtype=F64), official_per_step_table(C, L, momentum)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5, generator=gen)
        ours.bias.uniform_(-1, 1, generator=gen)
        table[0].weight.copy_(ours.weight)
        table[0].bias.copy_(ours.bias)
    tol = tolerance(F64, 8, 4)
    # (start, T): inside the table, reaching its end, starting past it, and long past it (an ever-longer stream)
    for start, steps in ((0, 3), (1, 4), (3, 6), (7, 2), (0, 5), (2, 9)):
        x = torch.randn(steps, 8, C, generator=gen, dtype=F64) * 2 + 1
        for training in (True, False):
            ours.train(training), table.train(training)
            torch.testing.assert_close(ours(x, start=start), run_table(table, x, start), **tol)
        torch.testing.assert_close(ours.running_mean, torch.stack([bn.running_mean for bn in table]), **tol)
        torch.testing.assert_close(ours.running_var, torch.stack([bn.running_var for bn in table]), **tol)
        assert ours.num_batches_tracked.tolist() == [int(bn.num_batches_tracked) for bn in table]


def test_batch_norm_per_step_options():
    with pytest.raises(ValueError, match="momentum"):
        BatchNormPerStep(3, 4, momentum=1.5)
    with pytest.raises(ValueError, match="max_steps"):
        BatchNormPerStep(3, 0)
    bn = BatchNormPerStep(3, np.int64(4), momentum=None)  # NumPy integers are integers
    assert "momentum=None" in repr(bn)
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(bn.eval()(x, start=np.int32(3)), bn(x, start=3))
    for bad in (1.5, True, -1):
        with pytest.raises(ValueError, match="start"):
            bn(x, start=bad)
    bn.train()
    old = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}  # saved before the counter
    bn.load_state_dict(old)
    assert bn.num_batches_tracked.tolist() == [0, 0, 0, 0]


# ------------------------------------------------------------------------------------- recurrent weight bounds
U = [-3.0, -0.5, -0.01, -0.0, 0.0, 0.01, 0.5, 3.0]
CLIPPED = [-1.0, -0.5, -0.1, 0.1, 0.1, 0.1, 0.5, 1.0]  # max |u| 1, min |u| 0.1; zeros go to +0.1


def test_min_abs_clipping_numpy_and_torch():
    v = np.array(U)
    assert init.clip_(v, 1.0, min_abs=0.1) is v
    np.testing.assert_array_equal(v, CLIPPED)
    np.testing.assert_array_equal(init.clip_(np.array(U), None, min_abs=0.1),
                                  [-3.0, -0.5, -0.1, 0.1, 0.1, 0.1, 0.5, 3.0])  # no maximum
    for module in (IndRNNRecurrence(8, recurrent_bound=1.0, recurrent_min_abs=0.1),
                   IndRNNCell(2, 8, recurrent_bound=1.0, recurrent_min_abs=0.1),
                   IndRNN(2, 8, recurrent_bound=1.0, recurrent_min_abs=0.1)):
        u = module._recurrent_weights()[0]
        with torch.no_grad():
            u.copy_(torch.tensor(U))
        clip_recurrent_weights_(module)
        assert module._recurrent_weights()[0] is u and torch.equal(u, torch.tensor(CLIPPED))  # in place
    rnn = IndRNN(2, 8, num_layers=2, recurrent_bound=1.0)
    with torch.no_grad():
        rnn.weight_hh_l1.copy_(torch.tensor(U))
    rnn.clip_recurrent_(min_abs=0.1)  # a call's own min_abs
    assert torch.equal(rnn.weight_hh_l1, torch.tensor(CLIPPED))
    assert "recurrent_min_abs=0.1" in repr(IndRNN(2, 8, recurrent_bound=1.0, recurrent_min_abs=0.1))
    assert StackSpec.check(2, 8, recurrent_bound=1.0, recurrent_min_abs=0.1).recurrent_min_abs == 0.1


def test_min_abs_through_the_blocks_and_the_optimizer():
    torch.manual_seed(0)
    net = ResidualIndRNN(2, 6, num_blocks=1, recurrent_bound=1.0, recurrent_min_abs=0.5)
    net_dense = DenseIndRNN(2, growth_rate=2, block_layers=(1,), recurrent_bound=1.0, recurrent_min_abs=0.5)
    for model in (net, net_dense):
        opt = torch.optim.SGD(model.parameters(), lr=10.0)
        register_recurrent_clipping(opt, model)
        us = [m.weight_hh for m in model.modules() if isinstance(m, IndRNNRecurrence)]
        assert all(((u.abs() >= 0.5) & (u.abs() <= 1.0)).all() for u in us)  # clipped once at registration
        model(torch.randn(5, 3, 2)).square().sum().backward()
        opt.step()
        assert all(((u.abs() >= 0.5) & (u.abs() <= 1.0)).all() for u in us)


@pytest.mark.parametrize("kwargs, match", [
    (dict(recurrent_bound=0.5, recurrent_min_abs=0.6), "exceeds the maximum"),
    (dict(recurrent_min_abs=-0.1), "recurrent_min_abs must be"),
    (dict(recurrent_min_abs=float("nan")), "recurrent_min_abs must be"),
    (dict(recurrent_min_abs=True), "recurrent_min_abs must be"),
])
def test_bad_min_abs_names_the_argument(kwargs, match):
    for build in (lambda: IndRNN(2, 4, **kwargs), lambda: IndRNNCell(2, 4, **kwargs),
                  lambda: IndRNNRecurrence(4, **kwargs), lambda: ResidualIndRNN(2, 4, **kwargs)):
        with pytest.raises(ValueError, match=match):
            build()
    with pytest.raises(ValueError, match="min_abs"):
        IndRNN(2, 4, recurrent_bound=1.0).clip_recurrent_(min_abs=2.0)
