"""Graded checks for stage 2.6 — data parallelism on torch.distributed.

Each check that needs a process group starts two CPU ranks on gloo (forked from the check, so they
share its process group and die with it), meeting through a file in a fresh temporary folder
(a rendezvous that no other run can collide with), with a 15 s process-group timeout under the
check's own time limit: a rank that raises or hangs fails the check with that rank's error in one
line, never a hang.

Reference numerics:
  * equivalence: one process training the same model (plain SGD) on the concatenated batch, which
    is the definition of synchronous data parallelism (the mean loss over all sequences);
  * ``torch.nn.parallel.DistributedDataParallel`` run in the same ranks on the same data;
  * sharding: the definition (disjoint, covering, reshuffled per epoch).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from shared.testing import check, check_close, covers, declare_parts, depends_on, fail, likely

V, D, T = 16, 8, 6  # vocabulary, width and context of the test model
WORLD = 2
PG_TIMEOUT_S = 15.0

SUMMED = "gradients summed instead of averaged (all_reduce sums: divide by the world size)"
NO_BROADCAST = "no broadcast at start: every rank keeps its own initial weights"
NO_BUFFERS = "buffers not broadcast (only the parameters)"
SAME_SHARD = "every rank sees the same shard"
NO_RESHUFFLE = "no reshuffle per epoch (the permutation ignores epoch: the set_epoch idea)"
EVERY_MICRO_STEP = "all-reduce on every micro-step of accumulation (communicate after the last one only)"
NOT_COPIED_BACK = "the bucket's averaged values are never copied back into the gradients"
EVERY_RANK_WRITES = "every rank writes the checkpoint (only rank 0 should)"
NO_BARRIER_AFTER_SAVE = "no barrier after rank 0's write: other ranks return before the checkpoint exists"
NO_BARRIER_BEFORE_READ = "missing barrier before rank 0 reads what the others wrote"

declare_parts({
    SUMMED: "allreduce_gradients",
    NO_BROADCAST: "broadcast_parameters",
    NO_BUFFERS: "broadcast_parameters",
    SAME_SHARD: "shard_indices",
    NO_RESHUFFLE: "shard_indices",
    EVERY_MICRO_STEP: "train_step",
    NOT_COPIED_BACK: "allreduce_gradients_bucketed",
    EVERY_RANK_WRITES: "save_checkpoint",
    NO_BARRIER_AFTER_SAVE: "save_checkpoint",
    NO_BARRIER_BEFORE_READ: "gather_to_rank0",
})


# ---------------------------------------------------------------- the test model and data


class TinyLM(nn.Module):
    """Embedding, a hand-written norm, a Linear, an output layer; a frozen parameter and a buffer."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.tok = nn.Embedding(V, D)
        self.pos = nn.Parameter(torch.randn(T, D) * 0.1)
        self.frozen = nn.Parameter(torch.randn(D), requires_grad=False)  # never gets a gradient
        self.register_buffer("scale", torch.rand(D) + 0.5)
        self.fc = nn.Linear(D, 2 * D)
        self.out = nn.Linear(2 * D, V)
        self.drop = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.tok(ids) + self.pos[: ids.shape[1]] + self.frozen  # (B, T, D)
        h = F.layer_norm(h, (D,)) * self.scale  # (B, T, D)
        logits = self.out(self.drop(torch.tanh(self.fc(h))))  # (B, T, V)
        loss = F.cross_entropy(logits.float().view(-1, V), targets.reshape(-1))  # (B*T, V)
        return logits, loss


class PlainSGD:
    """p -= lr * grad, with torch.optim's step / zero_grad interface.

    Written out rather than torch.optim.SGD (the same numbers): the first torch.optim optimizer in a
    process costs seconds of imports, and every rank here is a fresh fork."""

    def __init__(self, params: Any, lr: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"params": self.params, "lr": lr}]

    @torch.no_grad()
    def step(self) -> None:
        lr = self.param_groups[0]["lr"]
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None


def model_at(seed: int) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM()


def batch(seed: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(V, (b, T + 1), generator=g)  # (b, T + 1)
    return ids[:, :-1], ids[:, 1:]


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def flat_grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.detach().reshape(-1) for p in model.parameters() if p.grad is not None])


# ---------------------------------------------------------------- two ranks, forked from the check


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank_main(fn: Callable[..., Any], rank: int, world: int, folder: str, init_group: bool, kwargs: dict[str, Any]) -> None:
    code = 1
    try:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=kwargs.pop("_port"))  # env:// works too; file:// cannot collide
        torch.set_num_threads(1)
        if init_group:
            dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world,
                                    timeout=timedelta(seconds=PG_TIMEOUT_S))
        out = fn(rank, world, folder, **kwargs)
        torch.save(out, Path(folder) / f"result-{rank}.pt")
        code = 0
    except BaseException as exc:  # noqa: BLE001 - reported to the check as data
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        where = ""
        for frame in traceback.extract_tb(exc.__traceback__):
            if "stages" in Path(frame.filename).parts and "tests" not in Path(frame.filename).parts:
                where = f"{Path(frame.filename).name} line {frame.lineno}, in {frame.name}"
        (Path(folder) / f"error-{rank}.json").write_text(json.dumps({"type": type(exc).__name__, "msg": first, "where": where, "t": time.time()}))
    finally:
        try:
            if dist.is_initialized():
                dist.destroy_process_group()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)


def run_ranks(fn: Callable[..., Any], world: int = WORLD, init_group: bool = True, limit_s: float = 25.0, **kwargs: Any) -> list[Any]:
    """Run ``fn(rank, world, folder, **kwargs)`` in ``world`` forked ranks; their return values, in rank order.

    The first rank to raise ends the run: the others get a moment to fail on their own (the
    process group notices the dead peer), then are killed; the check fails with that rank's error
    in one line (NotImplementedError stays NotImplementedError: "not implemented").
    """
    ctx = mp.get_context("fork")
    folder = tempfile.mkdtemp(prefix="llmfs-dist-")
    kwargs = {**kwargs, "_port": str(_free_port())}
    procs = [ctx.Process(target=_rank_main, args=(fn, r, world, folder, init_group, kwargs), daemon=True) for r in range(world)]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + limit_s
        first_failure: float | None = None
        while any(p.is_alive() for p in procs):
            now = time.monotonic()
            if first_failure is None and any(p.exitcode not in (None, 0) for p in procs):
                first_failure = now
            if now > deadline or (first_failure is not None and now - first_failure > 3.0):
                break
            time.sleep(0.01)
        errors = {}
        for r in range(world):
            e = Path(folder) / f"error-{r}.json"
            if e.exists():
                errors[r] = json.loads(e.read_text())
        for err in errors.values():  # a task not written wins over what it caused elsewhere
            if err["type"] == "NotImplementedError":
                raise NotImplementedError(err["msg"])
        if errors:
            r = min(errors, key=lambda k: (errors[k]["t"], k))  # the first to fail: the others failed because of it
            err = errors[r]
            at = f" (at {err['where']})" if err["where"] else ""
            fail(f"rank {r} of {world} raised {err['type']}: {err['msg']}{at}")
        hung = [r for r, p in enumerate(procs) if p.is_alive() or p.exitcode != 0]
        if hung:
            fail(f"rank {hung[0]} of {world} did not finish within {limit_s:.0f} s (a collective that other ranks never joined?)")
        return [torch.load(Path(folder) / f"result-{r}.pt", weights_only=False) for r in range(world)]
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join(timeout=5)
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- Task 1: the process group


def _setup_rank(rank: int, world: int, folder: str, impl: Any) -> dict[str, Any]:
    info = impl.setup(init_method=f"file://{folder}/rendezvous", timeout_s=PG_TIMEOUT_S)
    seen = {"rank": info.rank, "world_size": info.world_size, "local_rank": info.local_rank,
            "device": str(info.device), "backend": info.backend, "initialized": dist.is_initialized(),
            "group_rank": dist.get_rank() if dist.is_initialized() else None,
            "group_world": dist.get_world_size() if dist.is_initialized() else None,
            "group_backend": str(dist.get_backend()) if dist.is_initialized() else None}
    impl.teardown()
    seen["after_teardown"] = dist.is_initialized()
    impl.teardown()  # a second teardown is a no-op
    return seen


@covers("setup")
def test_setup_reads_the_torchrun_environment(impl) -> None:
    """setup joins a gloo group from RANK / WORLD_SIZE / LOCAL_RANK; teardown leaves it"""
    seen = run_ranks(_setup_rank, init_group=False, impl=impl)
    for r, s in enumerate(seen):
        check(s["initialized"], f"rank {r}: after setup, torch.distributed.is_initialized() is False")
        got = (s["rank"], s["world_size"], s["local_rank"])
        check(got == (r, WORLD, r), f"rank {r}: DistInfo (rank, world_size, local_rank) = {got}, expected {(r, WORLD, r)} "
              f"(RANK={r}, WORLD_SIZE={WORLD}, LOCAL_RANK={r} were set)")
        check((s["group_rank"], s["group_world"]) == (r, WORLD),
              f"rank {r}: the process group has rank {s['group_rank']} of {s['group_world']}, expected {r} of {WORLD}")
        check(s["backend"] == "gloo" and s["group_backend"] == "gloo" and s["device"] == "cpu",
              f"rank {r}: without CUDA expected backend 'gloo' on device 'cpu', got DistInfo backend {s['backend']!r}, "
              f"device {s['device']!r}, group backend {s['group_backend']!r}")
        check(not s["after_teardown"], f"rank {r}: teardown() left the process group initialised (destroy_process_group)")


# ---------------------------------------------------------------- Task 2: sharding


def _ints(indices: Any) -> list[int]:
    """A shard as plain ints (a list, a tensor or an array of indices all count)."""
    return [int(i) for i in indices]


@covers("shard_indices")
def test_shards_are_disjoint_covering_and_reshuffled(impl) -> None:
    """shards are disjoint, cover every window, and change with the epoch"""
    for n, w in ((12, 2), (10, 3), (7, 4)):
        shards = [_ints(impl.shard_indices(n, r, w, epoch=0, seed=5)) for r in range(w)]
        if w > 1 and all(s == shards[0] for s in shards):
            fail(f"n={n}, world_size={w}: every rank got the same indices {shards[0]}" + likely(SAME_SHARD))
        flat = [i for s in shards for i in s]
        check(sorted(flat) == list(range(n)),
              f"n={n}, world_size={w}: the shards {shards} are not disjoint or do not cover 0..{n - 1} exactly once")
        sizes = [len(s) for s in shards]
        check(max(sizes) - min(sizes) <= 1, f"n={n}, world_size={w}: shard sizes {sizes} differ by more than one")
        again = [_ints(impl.shard_indices(n, r, w, epoch=0, seed=5)) for r in range(w)]
        check(again == shards, f"n={n}, world_size={w}: a second call gave other shards ({again} vs {shards}): every rank must "
              "compute the same permutation, so it cannot come from an unseeded RNG")
    n, w = 64, 2
    e0 = [_ints(impl.shard_indices(n, r, w, epoch=0, seed=5)) for r in range(w)]
    e1 = [_ints(impl.shard_indices(n, r, w, epoch=1, seed=5)) for r in range(w)]
    if e0 == e1:
        fail(f"n={n}, world_size={w}: epoch 1 gives the same shards as epoch 0 (rank 0: {e0[0][:8]}...)" + likely(NO_RESHUFFLE))
    check(sorted(e1[0] + e1[1]) == list(range(n)), "epoch 1: the shards are not disjoint and covering")


# ---------------------------------------------------------------- Task 3: broadcast


def _broadcast_rank(rank: int, world: int, folder: str, impl: Any) -> dict[str, torch.Tensor]:
    model = model_at(100 + rank)  # every rank its own initialisation
    impl.broadcast_parameters(model)
    return {"params": flat_params(model), "scale": model.scale.clone()}


@covers("broadcast_parameters")
def test_broadcast_gives_every_rank_rank0s_weights(impl) -> None:
    """broadcast_parameters makes every rank start from rank 0's weights and buffers"""
    got = run_ranks(_broadcast_rank, impl=impl)
    want = model_at(100)
    own = model_at(101)
    check_close(got[0]["params"], flat_params(want), what="rank 0's parameters after the broadcast (they must not change)")
    check_close(got[1]["params"], flat_params(want), what="rank 1's parameters after the broadcast (rank 0's initial weights)",
                mistakes={NO_BROADCAST: flat_params(own)})
    check_close(got[1]["scale"], want.scale, what="rank 1's buffer 'scale' after the broadcast (rank 0's)",
                mistakes={NO_BUFFERS: own.scale})


# ---------------------------------------------------------------- Task 4: the all-reduce, against one process


STEPS, B, LR = 3, 4, 0.5


def _allreduce_rank(rank: int, world: int, folder: str, impl: Any, use: str, bucket_size: int = 0) -> dict[str, Any]:
    model = model_at(7)
    opt = PlainSGD(model.parameters(), lr=LR)
    if use == "ddp":
        trained: nn.Module = nn.parallel.DistributedDataParallel(model)
    else:
        trained = model
    grads = None
    for step in range(STEPS):
        x, y = batch(1000 * step + rank, B)  # this rank's half of the step's batch
        _, loss = trained(x, y)
        loss.backward()
        if use == "naive":
            impl.allreduce_gradients(model)
        elif use == "bucketed":
            impl.allreduce_gradients_bucketed(model, bucket_size)
        if step == 0:
            grads = flat_grads(model)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {"params": flat_params(model), "grads": grads}


def single_process(scale: float = 1.0, steps: int = STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """One process on the concatenated batch: (parameters after ``steps`` steps, first step's gradient * scale)."""
    model = model_at(7)
    opt = PlainSGD(model.parameters(), lr=LR)
    first = None
    for step in range(steps):
        xs, ys = zip(*(batch(1000 * step + r, B) for r in range(WORLD)), strict=True)
        _, loss = model(torch.cat(xs), torch.cat(ys))  # (WORLD * B, T)
        loss.backward()
        for p in model.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
        if step == 0:
            first = flat_grads(model)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return flat_params(model), first


@covers("allreduce_gradients")
@pytest.mark.points(2)
def test_allreduce_training_equals_one_process(impl) -> None:
    """3 steps with your all-reduce on 2 ranks == 1 process on the concatenated batch; ranks agree"""
    got = run_ranks(_allreduce_rank, impl=impl, use="naive")
    params, grad = single_process()
    _, summed = single_process(scale=WORLD)
    check_close(got[0]["grads"], grad, what="rank 0's gradient after allreduce_gradients (first step)",
                reference="one process on the concatenated batch", mistakes={SUMMED: summed})
    check_close(got[1]["params"], got[0]["params"], what="rank 1's parameters against rank 0's after 3 steps", atol=0, rtol=0)
    check_close(got[0]["params"], params, what="parameters after 3 steps of SGD", reference="one process on the concatenated batch")


@depends_on("allreduce_gradients")
@pytest.mark.timeout(90)
def test_allreduce_equals_ddp(impl) -> None:
    """your all-reduce training equals torch's DistributedDataParallel on the same data"""
    import torch._dynamo  # noqa: F401  DDP imports it on first use: once here, not in every fresh rank

    mine = run_ranks(_allreduce_rank, impl=impl, use="naive")
    ddp = run_ranks(_allreduce_rank, impl=impl, use="ddp")
    check_close(mine[0]["grads"], ddp[0]["grads"], what="the first step's averaged gradient",
                reference="torch.nn.parallel.DistributedDataParallel")
    check_close(mine[0]["params"], ddp[0]["params"], what="parameters after 3 steps",
                reference="torch.nn.parallel.DistributedDataParallel")


# ---------------------------------------------------------------- Task 5: buckets


def _count_calls(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn`` counting torch.distributed.all_reduce calls."""
    calls = [0]
    real = dist.all_reduce

    def counting(*a: Any, **k: Any) -> Any:
        calls[0] += 1
        return real(*a, **k)

    dist.all_reduce = counting  # type: ignore[assignment]
    dist.distributed_c10d.all_reduce = counting  # type: ignore[assignment]
    try:
        return fn(), calls[0]
    finally:
        dist.all_reduce = real  # type: ignore[assignment]
        dist.distributed_c10d.all_reduce = real  # type: ignore[assignment]


def _bucket_rank(rank: int, world: int, folder: str, impl: Any, bucket_size: int) -> dict[str, Any]:
    model = model_at(7)
    x, y = batch(rank, B)
    _, loss = model(x, y)
    loss.backward()
    local = flat_grads(model)
    n, calls = _count_calls(lambda: impl.allreduce_gradients_bucketed(model, bucket_size))
    sizes = [p.numel() for p in model.parameters() if p.requires_grad]
    return {"grads": flat_grads(model), "local": local, "returned": n, "calls": calls, "sizes": sizes}


def expected_buckets(sizes: list[int], bucket_size: int) -> int:
    count, fill = 0, 0
    for n in sizes:
        if count == 0 or (fill + n > bucket_size and fill > 0):
            count, fill = count + 1, 0
        fill += n
    return count


@covers("allreduce_gradients_bucketed")
@depends_on("allreduce_gradients")
def test_bucketed_equals_naive(impl) -> None:
    """the bucketed all-reduce gives the naive one's gradients, one call per bucket"""
    _, grad = single_process(steps=1)
    for bucket_size in (200, 1 << 20):
        got = run_ranks(_bucket_rank, impl=impl, bucket_size=bucket_size)
        check_close(got[0]["grads"], grad, what=f"rank 0's gradients after allreduce_gradients_bucketed(bucket_size={bucket_size})",
                    reference="the mean gradient (one process on the concatenated batch)",
                    mistakes={NOT_COPIED_BACK: got[0]["local"], SUMMED: grad * WORLD})
        check_close(got[1]["grads"], grad, what=f"rank 1's gradients (bucket_size={bucket_size})")
        want = expected_buckets(got[0]["sizes"], bucket_size)
        check(got[0]["returned"] == want,
              f"bucket_size={bucket_size}: returned {got[0]['returned']} buckets, expected {want} for gradient sizes "
              f"{got[0]['sizes']} (fill a bucket until the next gradient would pass bucket_size)")
        if got[0]["calls"]:  # counted when you call torch.distributed.all_reduce
            check(got[0]["calls"] == want, f"bucket_size={bucket_size}: {got[0]['calls']} all_reduce calls, expected one per "
                  f"bucket ({want})")


# ---------------------------------------------------------------- Task 6: accumulation


K = 2  # micro-batches per rank and step


class ForwardCounter(nn.Module):
    """Wraps the model; records how many all_reduce calls happened before each forward."""

    def __init__(self, inner: nn.Module, calls: list[int]) -> None:
        super().__init__()
        self.inner = inner
        self.calls = calls
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append(self.calls[0])
        return self.inner(x, y)


def _accum_rank(rank: int, world: int, folder: str, impl: Any, bucket_size: int | None) -> dict[str, Any]:
    calls = [0]
    real = dist.all_reduce

    def counting(*a: Any, **k: Any) -> Any:
        calls[0] += 1
        return real(*a, **k)

    dist.all_reduce = counting  # type: ignore[assignment]
    dist.distributed_c10d.all_reduce = counting  # type: ignore[assignment]
    model = ForwardCounter(model_at(7), calls)
    opt = PlainSGD(model.parameters(), lr=LR)
    losses = []
    for step in range(STEPS):
        micro = [batch(1000 * step + 10 * rank + m, B) for m in range(K)]
        losses.append(impl.train_step(model, opt, micro, bucket_size=bucket_size))
    return {"params": flat_params(model), "seen": model.seen, "calls": calls[0], "losses": losses}


def accum_reference() -> tuple[torch.Tensor, list[list[float]]]:
    model = model_at(7)
    opt = PlainSGD(model.parameters(), lr=LR)
    local_losses: list[list[float]] = [[] for _ in range(WORLD)]
    for step in range(STEPS):
        xs, ys = [], []
        for r in range(WORLD):
            mb = [batch(1000 * step + 10 * r + m, B) for m in range(K)]
            with torch.no_grad():
                local_losses[r].append(sum(model(x, y)[1].item() for x, y in mb) / K)
            xs += [x for x, _ in mb]
            ys += [y for _, y in mb]
        _, loss = model(torch.cat(xs), torch.cat(ys))  # (WORLD * K * B, T)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return flat_params(model), local_losses


@covers("train_step")
@depends_on("allreduce_gradients")
@pytest.mark.points(2)
def test_accumulation_communicates_on_the_last_micro_step_only(impl) -> None:
    """train_step with 2 micro-batches per rank == one process on all 4; no all-reduce before the last micro-batch"""
    got = run_ranks(_accum_rank, impl=impl, bucket_size=None)
    params, losses = accum_reference()
    check_close(got[0]["params"], params, what=f"parameters after {STEPS} train_steps of {K} micro-batches on each of {WORLD} ranks",
                reference="one process on all the micro-batches concatenated")
    check_close(got[1]["params"], got[0]["params"], what="rank 1's parameters against rank 0's", atol=0, rtol=0)
    for r in range(WORLD):
        check_close(torch.tensor(got[r]["losses"]), torch.tensor(losses[r]),
                    what=f"rank {r}'s returned losses (the mean over its own micro-batches)")
    seen = got[0]["seen"]  # all_reduce calls counted before each forward
    early = [seen[i] - seen[i - 1] for i in range(1, len(seen)) if i % K != 0]  # calls between micro-batches of one step
    if any(early):
        fail(f"all_reduce was called between the micro-batches of one step ({early} calls before micro-batches 2..{K}); "
             "the averaged gradient is the same, for K times the traffic" + likely(EVERY_MICRO_STEP))


def test_accumulation_on_every_device_and_precision(impl, setting) -> None:
    """train_step on every device and precision (CPU: 2 gloo ranks; CUDA: 1 rank; MPS: none)"""
    if setting.device == "mps":
        pytest.skip("torch.distributed has no MPS backend")
    if setting.device == "cpu":
        got = run_ranks(_setting_rank, impl=impl, amp=setting.amp)
        params = got[0]
    else:  # one rank in this process, on the GPU (gloo all-reduces CUDA tensors too)
        folder = tempfile.mkdtemp(prefix="llmfs-dist-")
        try:
            dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=0, world_size=1,
                                    timeout=timedelta(seconds=PG_TIMEOUT_S))
            params = _setting_rank(0, 1, folder, impl, setting.amp, device=setting.device)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
            shutil.rmtree(folder, ignore_errors=True)
    ref = _setting_reference(setting, world=WORLD if setting.device == "cpu" else 1)
    check_close(params.float().cpu(), ref, what=f"parameters after train_step on {setting.id}", **setting.tol)


def _setting_rank(rank: int, world: int, folder: str, impl: Any, amp: str | None, device: str = "cpu") -> torch.Tensor:
    model = model_at(7).to(device)
    opt = PlainSGD(model.parameters(), lr=LR)
    micro = [tuple(t.to(device) for t in batch(10 * rank + m, B)) for m in range(K)]
    ctx = torch.autocast(device_type=device, dtype=getattr(torch, amp)) if amp else torch.autocast(device, enabled=False)
    with ctx:
        impl.train_step(model, opt, micro)
    return flat_params(model)


def _setting_reference(setting: Any, world: int) -> torch.Tensor:
    model = model_at(7)
    opt = PlainSGD(model.parameters(), lr=LR)
    xs, ys = zip(*(batch(10 * r + m, B) for r in range(world) for m in range(K)), strict=True)
    _, loss = model(torch.cat(xs), torch.cat(ys))  # (world * K * B, T)
    loss.backward()
    opt.step()
    return flat_params(model)


# ---------------------------------------------------------------- Task 7: rank-0 duties


def _save_rank(rank: int, world: int, folder: str, impl: Any) -> dict[str, Any]:
    writes: list[str] = []
    real = torch.save

    def recording(obj: Any, f: Any, *a: Any, **k: Any) -> Any:
        writes.append(str(f))
        if rank == 0:
            time.sleep(0.3)  # a slow disk: the others must wait for it
        return real(obj, f, *a, **k)

    torch.save = recording  # type: ignore[assignment]
    path = Path(folder) / "run" / "checkpoint.pt"
    try:
        impl.save_checkpoint(path, {"step": 3, "rank": rank, "w": torch.arange(4.0)})
    finally:
        torch.save = real  # type: ignore[assignment]
    readable = None
    if path.exists():
        readable = torch.load(path, weights_only=False)["rank"]
    return {"writes": writes, "readable": readable}


@covers("save_checkpoint")
def test_checkpoint_written_once_by_rank0(impl) -> None:
    """save_checkpoint: rank 0 writes once, and every rank can read it when the call returns"""
    got = run_ranks(_save_rank, impl=impl)
    check(len(got[0]["writes"]) >= 1, "rank 0 never called torch.save: rank 0 writes the checkpoint")
    if got[1]["writes"]:
        fail(f"rank 1 called torch.save too ({got[1]['writes'][0]}): {WORLD} writers of one file race" + likely(EVERY_RANK_WRITES))
    if got[1]["readable"] is None:
        fail("when save_checkpoint returned on rank 1, the checkpoint did not exist yet (rank 0's write takes 0.3 s here)"
             + likely(NO_BARRIER_AFTER_SAVE))
    check(got[1]["readable"] == 0, f"rank 1 read a checkpoint written by rank {got[1]['readable']}, expected rank 0's")


def _gather_rank(rank: int, world: int, folder: str, impl: Any) -> Any:
    if rank != 0:
        time.sleep(0.4)  # a slower rank: rank 0 must wait for its file
    out = Path(folder) / "records"
    try:
        return {"ok": impl.gather_to_rank0(out, {"rank": rank, "loss": 1.5 + rank})}
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        if rank == 0:
            return {"missing": f"{type(exc).__name__}: {str(exc)[:200]}"}
        raise


@covers("gather_to_rank0")
def test_rank0_reads_what_every_rank_wrote(impl) -> None:
    """gather_to_rank0: rank 0 gets every rank's record, even from a slow rank; the others get None"""
    got = run_ranks(_gather_rank, impl=impl)
    want = [{"rank": r, "loss": 1.5 + r} for r in range(WORLD)]
    if "missing" in got[0] or (isinstance(got[0].get("ok"), list) and len(got[0]["ok"]) < WORLD):
        what = got[0].get("missing") or f"only {got[0]['ok']}"
        fail(f"rank 0 read before rank 1 (0.4 s slower here) had written its record: {what}" + likely(NO_BARRIER_BEFORE_READ))
    check(got[0]["ok"] == want, f"rank 0 returned {got[0]['ok']!r}, expected {want!r} (every rank's record, in rank order)")
    check(got[1]["ok"] is None, f"rank 1 returned {got[1]['ok']!r}, expected None (only rank 0 collects)")
