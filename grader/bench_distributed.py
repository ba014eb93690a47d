"""Stage 2.6's benchmark: data-parallel training steps on two CPU ranks (gloo), in one run.

    python -m grader.bench_distributed [--version skeleton|solution] [--config tiny|micro] [--repeats N]

Measures, on stage 2.2's GPT (the reference one) with the ``train`` preset's shapes:
  * the time per optimizer step of your per-parameter all-reduce, your bucketed one and
    ``DistributedDataParallel``, interleaved rounds (median and spread);
  * one process (no communication) against two: throughput, scaling efficiency
    (tokens/s of 2 ranks / (2 x tokens/s of 1)), and the step's split into compute
    (forward, backward, AdamW) and communication (the all-reduce).
Every rank uses one CPU thread, so two ranks use two cores and perfect scaling is 2x.
A benchmark, not a test: nothing here passes or fails on speed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[no-untyped-def]
        print(f"bench_distributed: {message}", file=sys.stderr)
        raise SystemExit(2)


def _model_and_data(config: str) -> tuple[Any, Any, Any]:
    import torch

    from grader.train import CONFIGS
    from shared.loader import load_dep

    gpt = load_dep("2.2")
    mk = dict(CONFIGS[config]["model"])
    torch.manual_seed(0)
    model = gpt.GPT(gpt.GPTConfig(**mk))
    B, T = CONFIGS[config]["train"]["batch_size"], mk["block_size"]
    g = torch.Generator().manual_seed(1)
    x = torch.randint(mk["vocab_size"], (B, T), generator=g)
    return model, x, torch.roll(x, -1, 1)


def _steps(model: Any, opt: Any, x: Any, y: Any, n: int, sync: Any) -> tuple[float, float]:
    """n steps; (total seconds, seconds in ``sync``)."""
    comm = 0.0
    t0 = time.perf_counter()
    for _ in range(n):
        _, loss = model(x, y)
        loss.backward()
        t1 = time.perf_counter()
        if sync is not None:
            sync()
        comm += time.perf_counter() - t1
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, comm


def _rank(rank: int, world: int, folder: str, config: str, repeats: int, per: int, dmod: Any) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    code = 1
    try:
        out: dict[str, Any] = {}
        if world > 1:
            dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world,
                                    timeout=timedelta(seconds=120))  # fmt: skip
        model, x, y = _model_and_data(config)
        if world == 1:
            runs = {"one process": (model, None)}
        else:
            import copy

            ddp_model = torch.nn.parallel.DistributedDataParallel(copy.deepcopy(model))
            runs = {
                "per-parameter all-reduce": (model, lambda: dmod.allreduce_gradients(model)),
                "bucketed all-reduce": (copy.deepcopy(model), None),
                "DistributedDataParallel": (ddp_model, None),
            }
            bucketed = runs["bucketed all-reduce"][0]
            runs["bucketed all-reduce"] = (bucketed, lambda: dmod.allreduce_gradients_bucketed(bucketed, 1 << 20))
        opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, (m, _) in runs.items()}
        for k, (m, s) in runs.items():
            _steps(m, opts[k], x, y, 1, s)  # warm-up
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
        for _ in range(repeats):  # interleaved, so load on the machine hits every variant alike
            for k, (m, s) in runs.items():
                total, comm = _steps(m, opts[k], x, y, per, s)
                times[k].append((total / per, comm / per))
        out = {"times": times, "tokens": int(x.numel()), "params": sum(p.numel() for p in model.parameters()),
               "n_tensors": sum(1 for _ in model.parameters())}  # fmt: skip
        if rank == 0:
            (Path(folder) / f"result-{world}.json").write_text(json.dumps(out))
        code = 0
    except NotImplementedError as exc:
        (Path(folder) / "error.txt").write_text(f"not implemented yet — {exc}")
    except Exception as exc:
        (Path(folder) / "error.txt").write_text(f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}")
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
        os._exit(code)


def _run(world: int, folder: str, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_rank, args=(r, world, folder, *args)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
        if p.is_alive():
            p.kill()
    err = Path(folder) / "error.txt"
    if err.exists():
        raise RuntimeError(err.read_text())
    return json.loads((Path(folder) / f"result-{world}.json").read_text())


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m grader.bench_distributed", description=__doc__.splitlines()[0])
    p.add_argument("--version", choices=("skeleton", "solution"), default="skeleton")
    p.add_argument("--config", choices=("micro", "tiny"), default="tiny")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps-per-round", type=int, default=3)
    a = p.parse_args(argv)
    if a.repeats < 1 or a.steps_per_round < 1:
        p.error("--repeats and --steps-per-round must be positive")
    os.environ["LLMFS_VERSION"] = a.version
    os.environ.setdefault("LLMFS_DEPS", "solution")
    import torch

    from shared import loader

    try:
        dmod = loader.load("2.6")
    except loader.LearnerCodeError as exc:
        print(f"bench_distributed: {exc}", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    import torch._dynamo  # noqa: F401  (DDP and AdamW import it: once here, not in every rank)

    folder = tempfile.mkdtemp(prefix="llmfs-bench-dist-")
    try:
        one = _run(1, folder, a.config, a.repeats, a.steps_per_round, dmod)
        two = _run(2, folder, a.config, a.repeats, a.steps_per_round, dmod)
    except RuntimeError as exc:
        print(f"bench_distributed: {exc}", file=sys.stderr)
        return 1
    tok = one["tokens"]

    def med(rows: list[list[float]], i: int = 0) -> tuple[float, float]:
        v = [r[i] for r in rows]
        return statistics.median(v), (max(v) - min(v)) / 2

    print(f"config {a.config}: {one['params']:,} parameters in {one['n_tensors']} tensors, {tok:,} tokens per rank and step; "
          f"{a.repeats} rounds of {a.steps_per_round} steps, 1 CPU thread per rank, gloo")  # fmt: skip
    t1, s1 = med(one["times"]["one process"])
    print(f"  one process (no communication): {1e3 * t1:8.1f} ms/step (± {1e3 * s1:.1f})  {tok / t1:10,.0f} tokens/s")
    base = None
    for k in ("per-parameter all-reduce", "bucketed all-reduce", "DistributedDataParallel"):
        t, s = med(two["times"][k])
        c, _ = med(two["times"][k], 1)
        base = base or t
        split = f"communication {1e3 * c:6.1f} ms ({100 * c / t:4.1f}%)" if k != "DistributedDataParallel" else "communication overlapped with backward"
        print(f"  2 ranks, {k:25s} {1e3 * t:8.1f} ms/step (± {1e3 * s:.1f})  {2 * tok / t:10,.0f} tokens/s  "
              f"scaling efficiency {100 * t1 / t:5.1f}%  {split}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
