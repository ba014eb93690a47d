"""Stage 2.6 — data parallelism on torch.distributed: your all-reduce equals DDP.

Your file: fill in the tasks (``# TODO(Task N)``), then grade with ``nox -s grade -- 2.6``.

Every rank (one process each, started by ``torchrun``) holds a full copy of the model, trains on
its own shard of the data, and after each backward the ranks average their gradients, so that
every copy takes the same optimizer step: the step of one process on all the ranks' data at once.
``nox -s train -- --nproc N`` (``grader/distributed_train.py``) runs these functions on 2.3's loop.
"""

from __future__ import annotations

import json  # noqa: F401  (the tasks below use these)
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta  # noqa: F401
from pathlib import Path  # noqa: F401
from typing import Any

import torch
import torch.distributed as dist  # noqa: F401
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
    # TODO(Task 1): read RANK / WORLD_SIZE / LOCAL_RANK, pick backend and device, init_process_group with the timeout.
    raise NotImplementedError("Task 1: process-group setup")


def teardown() -> None:
    """Leave the process group (``destroy_process_group``); a no-op when none is initialised."""
    # TODO(Task 1): destroy the process group if one is initialised.
    raise NotImplementedError("Task 1: process-group teardown")


# ---------------------------------------------------------------- Task 2: sharding the windows


def shard_indices(n: int, rank: int, world_size: int, epoch: int, seed: int = 0) -> list[int]:
    """The indices of the ``n`` training windows that ``rank`` trains on in ``epoch``.

    All ranks compute the same permutation of 0 .. n-1 (a ``torch.Generator`` seeded with
    ``seed + epoch``: the ``DistributedSampler.set_epoch`` idea) and rank r takes every
    world_size-th entry from position r. So the shards are disjoint, together cover all n
    windows, differ in size by at most one, and are reshuffled each epoch.
    """
    # TODO(Task 2): one permutation seeded with seed + epoch, rank r takes perm[r::world_size].
    raise NotImplementedError("Task 2: shard_indices")


# ---------------------------------------------------------------- Task 3: identical initial weights


def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Overwrite every parameter and buffer of ``model`` with rank ``src``'s, in place.

    After it, all ranks start from rank ``src``'s initial weights even though each seeded its
    RNG differently (per-rank streams for dropout and data).
    """
    # TODO(Task 3): dist.broadcast every parameter and buffer from src.
    raise NotImplementedError("Task 3: broadcast_parameters")


# ---------------------------------------------------------------- Task 4: the gradient all-reduce


def allreduce_gradients(model: nn.Module) -> None:
    """Replace each parameter's ``.grad`` by its mean over the ranks, one all-reduce per parameter.

    ``all_reduce`` sums; divide by the world size, so that the step equals one process's step on
    the concatenated batch (its loss is the mean over all sequences). Parameters without a
    gradient (frozen, or unused this step) are skipped.
    """
    # TODO(Task 4): all_reduce each .grad (SUM), then divide by the world size.
    raise NotImplementedError("Task 4: allreduce_gradients")


# ---------------------------------------------------------------- Task 5: buckets


def allreduce_gradients_bucketed(model: nn.Module, bucket_size: int = 1 << 20) -> int:
    """The same averaging as ``allreduce_gradients``, with one all-reduce per bucket.

    Walk the parameters that have a gradient in order; fill a bucket until adding the next
    gradient would pass ``bucket_size`` elements (a gradient larger than that gets a bucket of
    its own); flatten the bucket into one tensor (``torch.cat`` of ``g.reshape(-1)``), all-reduce
    it, divide by the world size and copy the slices back into the gradients.
    Returns the number of buckets (= all-reduce calls).
    """
    # TODO(Task 5): group gradients into buckets of at most bucket_size elements, one all_reduce per flattened bucket, copy back.
    raise NotImplementedError("Task 5: allreduce_gradients_bucketed")


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
    # TODO(Task 6): backward every micro-batch (loss / k), average the gradients once after the last, step, zero_grad.
    raise NotImplementedError("Task 6: train_step")


# ---------------------------------------------------------------- Task 7: rank-0 duties


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Rank 0 writes ``state`` to ``path`` with ``torch.save`` (atomically); every rank then waits.

    Only rank 0 writes (the weights are the same everywhere; N writers of one file race). It
    writes to a temporary file beside ``path`` and renames it. Then ``dist.barrier()``: when the
    call returns on any rank, the checkpoint is complete and readable there.
    """
    # TODO(Task 7): rank 0 writes atomically with torch.save, then every rank waits at a barrier.
    raise NotImplementedError("Task 7: save_checkpoint")


def gather_to_rank0(folder: str | os.PathLike[str], record: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Every rank writes ``record`` as JSON to ``folder/rank-<r>.json``; rank 0 returns all of them.

    Returns, on rank 0, the list of every rank's record in rank order; None on the other ranks.
    Rank 0 must not read before every rank has written: a ``dist.barrier()`` between the writes
    and the reads.
    """
    # TODO(Task 7): every rank writes its JSON file, barrier, rank 0 reads them all.
    raise NotImplementedError("Task 7: gather_to_rank0")
