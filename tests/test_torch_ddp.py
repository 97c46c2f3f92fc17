"""Two-process DistributedDataParallel (gloo, CPU): training steps through IndRNN keep the replicas identical."""
import sys
from pathlib import Path

import torch

WORLD = 2
STEPS = 3


def _worker(rank: int, out_dir: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from indrnn_core.adapters.torch import IndRNN, register_recurrent_clipping

    torch.set_num_threads(1)
    # A file rendezvous: no port to pick beforehand (one picked free may be taken by the time rank 0 binds it).
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)  # same initial weights on every rank

        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = IndRNN(2, 8, num_layers=2, bidirectional=True, batch_first=True, recurrent_bound=1.02)
                self.head = torch.nn.Linear(16, 1)

            def forward(self, x):
                out, _ = self.rnn(x)
                return self.head(out[:, -1])

        model = DistributedDataParallel(Model())
        initial = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        register_recurrent_clipping(opt, model)
        gen = torch.Generator().manual_seed(100 + rank)  # different data on each rank
        for _ in range(STEPS):
            x, y = torch.randn(4, 12, 2, generator=gen), torch.randn(4, 1, generator=gen)
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        moved = max((p.detach() - q).abs().max().item() for p, q in zip(model.parameters(), initial))
        gathered = [torch.empty_like(flat) for _ in range(WORLD)]
        dist.all_gather(gathered, flat)
        if rank == 0:
            torch.save({"params": gathered, "moved": moved,
                        "max_u": max(u.abs().max().item() for u in model.module.rnn._recurrent_weights())},
                       f"{out_dir}/result.pt")
        # Both ranks done before either tears its connections down (rank 1 once aborted, SIGABRT, "terminate
        # called without an active exception": a peer closing while the other's gloo threads still run is the
        # likely cause).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_training_keeps_replicas_identical(tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    # Spawned children unpickle `_worker` by module name, but under --import-mode=importlib this file's module name
    # is not importable: expose it by its file name, on a sys.path the children inherit.
    name = Path(__file__).stem
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setitem(sys.modules, name, sys.modules[__name__])
    monkeypatch.setattr(_worker, "__module__", name)
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    result = torch.load(tmp_path / "result.pt")
    a, b = result["params"]
    assert result["moved"] > 1e-3  # the steps did train
    assert torch.equal(a, b)  # bit-identical replicas
    assert result["max_u"] <= 1.02  # clipping ran after every step on every replica
