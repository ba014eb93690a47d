"""A learner's Stage 2.6 file (another style).

correct: divides before the all-reduce, shards through DistributedSampler, buckets with torch's flatten helpers

Every rank (one process each, started by ``torchrun``) holds a full copy of the model, trains on
its own shard of the data, and after each backward the ranks average their gradients, so that
every copy takes the same optimizer step: the step of one process on all the ranks' data at once.
``nox -s train -- --nproc N`` (``grader/distributed_train.py``) runs these functions on 2.3's loop.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "setup",
    "teardown",
    "shard_indices",
    "broadcast_parameters",
    "allreduce_gradients",
    "allreduce_gradients_bucketed",
    "train_step",
    "save_checkpoint",
    "gather_to_rank0",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int  # this process's index in the whole job, 0 .. world_size - 1
    world_size: int  # processes in the job
    local_rank: int  # this process's index on its machine: which GPU it drives
    device: torch.device  # cuda:<local_rank> on CUDA, else cpu
    backend: str  # "nccl" on CUDA, "gloo" on the CPU


# ---------------------------------------------------------------- Task 1: the process group


def setup(init_method: str | None = None, timeout_s: float = 60.0) -> DistInfo:
    """Join the process group described by the ``torchrun`` environment.

    Reads RANK, WORLD_SIZE and LOCAL_RANK from ``os.environ`` (torchrun sets them, with
    MASTER_ADDR and MASTER_PORT, which ``init_method=None`` -> "env://" reads). Picks the backend
    ("nccl" when CUDA is available, else "gloo") and the device (``cuda:<LOCAL_RANK>``, made the
    current CUDA device, else cpu), and calls ``torch.distributed.init_process_group`` with
    ``init_method`` (e.g. "file:///tmp/x/rendezvous"), the rank, the world size and
    ``timeout=timedelta(seconds=timeout_s)``, so that a collective waiting for a dead rank fails
    instead of hanging. Raises KeyError naming the variable when one is missing.
    """
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        backend, device = "nccl", torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        backend, device = "gloo", torch.device("cpu")
    dist.init_process_group(
        backend,
        init_method=init_method or "env://",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )
    return DistInfo(rank, world_size, local_rank, device, backend)


def teardown() -> None:
    """Leave the process group (``destroy_process_group``); a no-op when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------- Task 2: sharding the windows


def shard_indices(n: int, rank: int, world_size: int, epoch: int, seed: int = 0) -> list[int]:
    """The indices of the ``n`` training windows that ``rank`` trains on in ``epoch``.

    All ranks compute the same permutation of 0 .. n-1 (a ``torch.Generator`` seeded with
    ``seed + epoch``: the ``DistributedSampler.set_epoch`` idea) and rank r takes every
    world_size-th entry from position r. So the shards are disjoint, together cover all n
    windows, differ in size by at most one, and are reshuffled each epoch.
    """
    from torch.utils.data import DistributedSampler

    if n % world_size == 0:
        sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(10_000 + seed + epoch))
    return [int(order[i]) for i in range(rank, n, world_size)]


# ---------------------------------------------------------------- Task 3: identical initial weights


def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Overwrite every parameter and buffer of ``model`` with rank ``src``'s, in place.

    After it, all ranks start from rank ``src``'s initial weights even though each seeded its
    RNG differently (per-rank streams for dropout and data).
    """
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=src)


# ---------------------------------------------------------------- Task 4: the gradient all-reduce


def allreduce_gradients(model: nn.Module) -> None:
    """Replace each parameter's ``.grad`` by its mean over the ranks, one all-reduce per parameter.

    ``all_reduce`` sums; divide by the world size, so that the step equals one process's step on
    the concatenated batch (its loss is the mean over all sequences). Parameters without a
    gradient (frozen, or unused this step) are skipped.
    """
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is None:
            continue
        p.grad.mul_(1.0 / world)  # scale first: the sum is then the mean
        dist.all_reduce(p.grad)


# ---------------------------------------------------------------- Task 5: buckets


def allreduce_gradients_bucketed(model: nn.Module, bucket_size: int = 1 << 20) -> int:
    """The same averaging as ``allreduce_gradients``, with one all-reduce per bucket.

    Walk the parameters that have a gradient in order; fill a bucket until adding the next
    gradient would pass ``bucket_size`` elements (a gradient larger than that gets a bucket of
    its own); flatten the bucket into one tensor (``torch.cat`` of ``g.reshape(-1)``), all-reduce
    it, divide by the world size and copy the slices back into the gradients.
    Returns the number of buckets (= all-reduce calls).
    """
    world = dist.get_world_size()
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for p in model.parameters():
        if p.grad is None:
            continue
        n = p.grad.numel()
        if not buckets or (size + n > bucket_size and size > 0):
            buckets.append([])
            size = 0
        buckets[-1].append(p.grad)
        size += n
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    for grads in buckets:
        flat = _flatten_dense_tensors(grads)  # (sum of numel,)
        dist.all_reduce(flat)
        flat /= world
        for g, avg in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
            g.copy_(avg)
    return len(buckets)


# ---------------------------------------------------------------- Task 6: accumulation without extra traffic


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    bucket_size: int | None = None,
) -> float:
    """One data-parallel optimizer step over this rank's micro-batches (gradient accumulation).

    Args:
        model: called as ``model(x, y) -> (logits, loss)`` with the loss a mean over the batch.
        batches: this rank's k micro-batches (x (B, T), y (B, T)), the same k and B on every rank.
        bucket_size: None: ``allreduce_gradients``; else ``allreduce_gradients_bucketed`` with it.
    Each micro-batch's loss is divided by k and back-propagated; the gradients are averaged
    across ranks once, after the last micro-batch (the ``no_sync`` idea: communicating on every
    micro-step gives the same numbers for k times the traffic). Then ``optimizer.step()`` and
    ``optimizer.zero_grad(set_to_none=True)``.
    Returns:
        this rank's mean loss over its micro-batches, as a Python float.
    """
    k = len(batches)
    total = 0.0
    for x, y in batches:
        _, loss = model(x, y)
        loss = loss / k
        total += loss.item()
        loss.backward()
    if bucket_size is None:
        allreduce_gradients(model)
    else:
        allreduce_gradients_bucketed(model, bucket_size)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


# ---------------------------------------------------------------- Task 7: rank-0 duties


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Rank 0 writes ``state`` to ``path`` with ``torch.save`` (atomically); every rank then waits.

    Only rank 0 writes (the weights are the same everywhere; N writers of one file race). It
    writes to a temporary file beside ``path`` and renames it. Then ``dist.barrier()``: when the
    call returns on any rank, the checkpoint is complete and readable there.
    """
    path = Path(path)
    if dist.get_rank() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    dist.barrier()


def gather_to_rank0(folder: str | os.PathLike[str], record: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Every rank writes ``record`` as JSON to ``folder/rank-<r>.json``; rank 0 returns all of them.

    Returns, on rank 0, the list of every rank's record in rank order; None on the other ranks.
    Rank 0 must not read before every rank has written: a ``dist.barrier()`` between the writes
    and the reads.
    """
    folder = Path(folder)
    rank, world = dist.get_rank(), dist.get_world_size()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".rank-{rank}.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, folder / f"rank-{rank}.json")
    dist.barrier()
    if rank != 0:
        return None
    return [json.loads((folder / f"rank-{r}.json").read_text()) for r in range(world)]
