"""Stage 2.3 — pretraining: batches, the LR schedule, AdamW groups, clipping, AMP, checkpoints, the loop.

Fill in each TODO (Task 1 .. Task 8, in the order of the lesson). Grade with:
    nox -s grade -- 2.3

Everything here works on any language model with the stage 2.2 interface
``model(ids (B, T), targets (B, T)) -> (logits (B, T, vocab), loss)``; the command
``nox -s train`` runs it on your GPT and your tokenizer once the checks are green.
"""

from __future__ import annotations

import hashlib  # noqa: F401  (the tasks below use these)
import math  # noqa: F401
import os
import random  # noqa: F401
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path  # noqa: F401
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.loader import load_dep  # noqa: F401  (Task 6: stage 0.2's helpers)

__all__ = [
    "TrainConfig",
    "StepLog",
    "get_batch",
    "estimate_loss",
    "lr_at",
    "param_groups",
    "make_optimizer",
    "clip_grad_norm",
    "precision",
    "train_step",
    "save_checkpoint",
    "load_checkpoint",
    "train",
]

@dataclass
class TrainConfig:
    batch_size: int = 16  # sequences per micro-batch
    block_size: int = 128  # tokens per sequence (at most the model's block_size)
    grad_accum: int = 1  # micro-batches per optimizer step: the step sees batch_size * grad_accum sequences
    max_steps: int = 2000  # optimizer steps in the whole run
    max_lr: float = 1e-3  # the peak learning rate, reached at the end of the warmup
    min_lr: float = 1e-4  # the floor the cosine decays to (max_lr / 10, as in Chinchilla)
    warmup_steps: int = 100  # steps of linear warmup
    weight_decay: float = 0.1  # AdamW's decoupled decay, on the weight matrices only
    beta1: float = 0.9
    beta2: float = 0.95  # GPT-3's value: faster-adapting second moment than the default 0.999
    grad_clip: float = 1.0  # clip the total gradient norm to this (0: no clipping)
    eval_interval: int = 100  # estimate the validation loss every this many steps (0: never)
    eval_iters: int = 20  # batches per split in each estimate
    seed: int = 1337  # model init, data order, dropout


@dataclass
class StepLog:
    """What the loop reports after each optimizer step (for the progress bar and the metrics file)."""

    step: int  # optimizer steps completed so far (1 after the first)
    loss: float  # the training loss of this step (mean over its micro-batches)
    lr: float  # the learning rate this step used
    tokens: int  # tokens this step trained on: batch_size * block_size * grad_accum
    val: dict[str, float] | None  # {"train": ..., "val": ...} when this step ran an evaluation


# ---------------------------------------------------------------- Task 1: get_batch


def get_batch(
    data: np.ndarray,
    batch_size: int,
    block_size: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``data`` and their next-token targets.

    Args:
        data: (N,) token ids, any integer dtype (the training split is a uint16 memmap).
        generator: the CPU generator the start positions are drawn from (None: torch's global one).
    Returns:
        x (B, T) int64 and y (B, T) int64 on ``device``, with y[b, t] = data[i_b + t + 1] for
        x[b, t] = data[i_b + t]. Every start i_b is uniform over 0 .. N - T - 1, so no window
        runs past the end and the last window can be drawn.
    Raises:
        ValueError: when ``data`` holds fewer than block_size + 1 tokens (not even one window).
    """
    # TODO(Task 1): raise ValueError when len(data) < block_size + 1. Draw batch_size starts with
    #   torch.randint(len(data) - block_size, (batch_size,), generator=generator) (the high end is exclusive).
    #   x = the windows data[i : i + block_size], y = data[i + 1 : i + 1 + block_size], stacked to (B, T),
    #   as int64 (np.asarray(..., dtype=np.int64), then torch.from_numpy), moved to `device`.
    #   On CUDA, x.pin_memory().to(device, non_blocking=True) overlaps the copy with compute.
    raise NotImplementedError("Task 1: get_batch")


# ---------------------------------------------------------------- Task 2: estimate_loss


def estimate_loss(
    model: nn.Module,
    data: Mapping[str, np.ndarray],
    eval_iters: int,
    batch_size: int,
    block_size: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """The mean loss of ``eval_iters`` random batches of each split, without dropout or a graph.

    Args:
        data: split name -> (N,) token ids, e.g. {"train": ..., "val": ...}.
        generator: where the batches' start positions come from (passed to get_batch).
    Returns:
        split name -> mean loss (a Python float), for every split of ``data``.
    The model is in eval mode and no graph is built while it runs; afterwards it is back in
    the mode it was in before (train mode, during training).
    """
    # TODO(Task 2): remember model.training, call model.eval(); under torch.no_grad(), for each split
    #   average the loss of eval_iters get_batch(...) batches (forward under
    #   torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None)); loss.item() each.
    #   Finally restore the mode: model.train(was_training) (a try/finally keeps it even on errors).
    raise NotImplementedError("Task 2: estimate_loss")


# ---------------------------------------------------------------- Task 3: the learning-rate schedule


def lr_at(step: int, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based: the first step is step 0).

        step < W:           max_lr * (step + 1) / W                      linear warmup
        W <= step <= S:     min_lr + (max_lr - min_lr) * (1 + cos(pi * (step - W) / (S - W))) / 2
        step > S:           min_lr
    with W = warmup_steps and S = max_steps. The first step already learns (max_lr / W, not 0),
    step W - 1 reaches max_lr, step W starts the cosine at max_lr, and it reaches min_lr at S.
    """
    # TODO(Task 3): the three cases above, with math.cos and math.pi. Mind the warmup's "+ 1" and
    #   W = 0 (no warmup: never divide by it).
    raise NotImplementedError("Task 3: lr_at")


# ---------------------------------------------------------------- Task 4: AdamW parameter groups


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW parameter groups: the weight matrices decay, everything else does not.

    Returns:
        [{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0}]
        Decayed: every trainable parameter with 2 or more dimensions that no nn.Embedding owns
        (Linear and attention projection weights). Not decayed: biases and LayerNorm gains and
        shifts (1-D), and embedding tables (token and position), also when the output layer
        shares the token table (tied weights). Each trainable parameter appears exactly once;
        frozen ones (requires_grad False) not at all.
    """
    # TODO(Task 4): collect id(m.weight) of every nn.Embedding in model.modules(); then walk
    #   model.parameters() (it yields a tied parameter once), skip frozen ones, and sort each into
    #   decay (p.dim() >= 2 and not an embedding's) or no_decay.
    raise NotImplementedError("Task 4: param_groups")


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.95)
) -> torch.optim.AdamW:
    """AdamW over ``param_groups(model, weight_decay)``; the fused kernel on CUDA."""
    # TODO(Task 4): torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas),
    #   with fused=True when the model's parameters are on CUDA.
    raise NotImplementedError("Task 4: make_optimizer")


# ---------------------------------------------------------------- Task 5: gradient clipping


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale all gradients together so that their total L2 norm is at most ``max_norm``.

    total = sqrt(sum over parameters of sum(grad ** 2)), over the parameters that have a .grad.
    Every gradient is multiplied in place by min(1, max_norm / (total + 1e-6)): the direction
    of the whole update is kept, only its length shrinks. Returns ``total`` (before clipping),
    a 0-dim tensor, as ``torch.nn.utils.clip_grad_norm_`` does.
    """
    # TODO(Task 5): the grads that exist; total = the L2 norm of their L2 norms
    #   (torch.linalg.vector_norm); coef = clamp(max_norm / (total + 1e-6), max=1.0);
    #   multiply every grad in place (g.mul_(coef)); return total. Do not call torch's clip_grad_norm_.
    raise NotImplementedError("Task 5: clip_grad_norm")


# ---------------------------------------------------------------- Task 6: one training step (accumulation, AMP)


def precision(device: torch.device | str, amp: bool) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
    """The autocast dtype (None: plain float32) and a GradScaler, through stage 0.2's helpers."""
    # TODO(Task 6): env = load_dep("0.2"). Without amp: (None, env.make_grad_scaler(device, torch.float32)).
    #   With amp: dtype = env.autocast_dtype(device); return (dtype, env.make_grad_scaler(device, dtype)).
    raise NotImplementedError("Task 6: precision")


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    lr: float | None = None,
    grad_clip: float = 1.0,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One optimizer step on the micro-batches ``batches`` (gradient accumulation).

    Args:
        batches: k micro-batches (x (B, T), y (B, T)); the step's gradient is the mean of theirs,
            the same as one step on all k * B sequences at once.
        lr: set every parameter group's learning rate to this first (None: leave it).
        grad_clip: clip_grad_norm to this before the step (0 or less: no clipping).
        amp_dtype: run the forward passes under torch.autocast with this dtype (None: float32).
        scaler: a GradScaler (enabled for float16; None or disabled otherwise).
    Returns:
        the mean loss over the micro-batches, before the update, as a Python float.
    After the step the gradients are cleared, so the next step starts from zero.
    """
    # TODO(Task 6): set group["lr"] for every optimizer.param_groups entry (when lr is given).
    #   For each (x, y): forward under autocast, loss = loss.float() / k, backward
    #   (scaler.scale(loss).backward() when the scaler is enabled).
    #   Then: scaler.unscale_(optimizer) (enabled scaler), clip_grad_norm (grad_clip > 0),
    #   scaler.step(optimizer); scaler.update() — or optimizer.step() — and
    #   optimizer.zero_grad(set_to_none=True). Return the summed loss / k values as a float.
    raise NotImplementedError("Task 6: train_step")


# ---------------------------------------------------------------- Task 7: checkpoints


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: Mapping[str, Any],
    tokenizer_json: str,
    train_config: Mapping[str, Any],
    generator: torch.Generator | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Write everything a bit-identical resume needs to ``path`` with ``torch.save``, atomically.

    The dict holds: "model" (state_dict), "optimizer" (state_dict: AdamW's moments), "step"
    (optimizer steps completed), "config" (the GPT config as a dict), "tokenizer" (the tokenizer's
    JSON text, so the checkpoint is self-contained), "tokenizer_sha256" (its hex digest),
    "train_config", "rng" (torch, CUDA, NumPy, Python and ``generator`` states) and "scaler".
    It is written to a temporary file beside ``path`` and renamed, so a crash never leaves a
    half-written checkpoint.
    """
    # TODO(Task 7): build the dict above. "rng": torch.get_rng_state(), torch.cuda.get_rng_state_all()
    #   (when CUDA is available), np.random.get_state(), random.getstate(), generator.get_state().
    #   "tokenizer_sha256": hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest().
    #   Create the folder, torch.save to a temporary name in it, then os.replace(tmp, path).
    raise NotImplementedError("Task 7: save_checkpoint")


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """Restore what ``save_checkpoint`` wrote into ``model``, ``optimizer``, the RNGs and ``scaler``.

    Returns the checkpoint dict (its "step" is where training continues). Tensors are mapped
    to the model's device; the RNG states are restored last, so that nothing after this call
    but the training itself draws random numbers.
    """
    # TODO(Task 7): torch.load(path, map_location=<the model's device>, weights_only=False);
    #   model.load_state_dict, optimizer.load_state_dict, scaler.load_state_dict (when saved);
    #   then every RNG state (RNG states are CPU byte tensors: .cpu() them first):
    #   torch.set_rng_state, torch.cuda.set_rng_state_all, np.random.set_state, random.setstate,
    #   generator.set_state. Return the dict.
    raise NotImplementedError("Task 7: load_checkpoint")


# ---------------------------------------------------------------- Task 8: the training loop


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Mapping[str, np.ndarray],
    cfg: TrainConfig,
    device: torch.device | str = "cpu",
    start_step: int = 0,
    generator: torch.Generator | None = None,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    on_step: Callable[[StepLog], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Train from ``start_step`` up to ``cfg.max_steps`` optimizer steps; returns the steps completed.

    Each step: the learning rate ``lr_at(step, ...)``; ``cfg.grad_accum`` micro-batches of
    ``get_batch(data["train"], ...)`` drawn from ``generator``; one ``train_step``. After step s
    (counting from 1), when ``cfg.eval_interval`` divides s or s is the last step, an
    ``estimate_loss`` over every split of ``data``, on batches from a generator seeded with
    ``cfg.seed + 1`` every time (the same batches each time, and the training stream is untouched).
    ``on_step`` gets a StepLog after every step; ``should_stop`` is asked before every step and
    ends the loop early when it says True (Ctrl-C in ``nox -s train``). The model is in train mode.
    """
    # TODO(Task 8): model.train(); step = start_step; while step < cfg.max_steps: stop if should_stop();
    #   lr = lr_at(step, ...); draw cfg.grad_accum batches; loss = train_step(...); step += 1;
    #   evaluate when due (torch.Generator().manual_seed(cfg.seed + 1)); on_step(StepLog(...)).
    #   Return step.
    raise NotImplementedError("Task 8: train")
