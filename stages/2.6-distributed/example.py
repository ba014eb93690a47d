"""Stage 2.6's worked example: ``nox -s example -- 2.6 [--version solution]`` (the lesson's "A worked example").

Two CPU ranks (forked processes) on gloo, meeting through a file in a temporary folder.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from shared.loader import load

dist_mod = load("2.6")  # your skeleton, or the reference with --version solution
torch.set_printoptions(precision=4)

for epoch in (0, 1):
    print(f"epoch {epoch}: " + "   ".join(f"rank {r}: {dist_mod.shard_indices(10, r, 2, epoch, seed=0)}" for r in range(2)))
print()


def fmt(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in t.detach().reshape(-1).tolist()) + "]"


def rank_main(rank: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    code = 1
    try:
        info = dist_mod.setup(init_method=f"file://{folder}/rendezvous", timeout_s=30)
        torch.manual_seed(rank)  # per-rank streams: different initial weights ...
        model = nn.Linear(2, 1, bias=False)
        before = model.weight.detach().clone()
        dist_mod.broadcast_parameters(model)  # ... until rank 0's are broadcast
        x = torch.tensor([[1.0, 2.0]]) * (rank + 1)  # each rank its own example
        loss = model(x).sum()
        loss.backward()
        local = model.weight.grad.clone()
        dist_mod.allreduce_gradients(model)
        lines = (f"rank {info.rank} of {info.world_size} ({info.backend}, {info.device}): weights {fmt(before)} -> "
                 f"{fmt(model.weight)} after the broadcast; gradient {fmt(local)} -> {fmt(model.weight.grad)} averaged")
        records = dist_mod.gather_to_rank0(Path(folder) / "records", {"line": lines})
        if records is not None:
            (Path(folder) / "out.txt").write_text("\n".join(r["line"] for r in records))
        dist_mod.teardown()
        code = 0
    except NotImplementedError as exc:
        (Path(folder) / "error.txt").write_text(str(exc))
    finally:
        os._exit(code)


folder = tempfile.mkdtemp(prefix="llmfs-example-")
ctx = mp.get_context("fork")
procs = [ctx.Process(target=rank_main, args=(r, folder)) for r in range(2)]
for p in procs:
    p.start()
for p in procs:
    p.join(timeout=60)
    if p.is_alive():
        p.kill()
if (Path(folder) / "error.txt").exists():
    raise NotImplementedError((Path(folder) / "error.txt").read_text())
if not (Path(folder) / "out.txt").exists():
    raise SystemExit("example 2.6: the two ranks did not finish (their errors are above)")
print((Path(folder) / "out.txt").read_text())
