"""Stage 2.3 — pretraining: batches, the LR schedule, AdamW groups, clipping, AMP, checkpoints, the loop.

Reference solution. Same public API as ``skeleton/pretraining.py``.

Everything here works on any language model with the stage 2.2 interface
``model(ids (B, T), targets (B, T)) -> (logits (B, T, vocab), loss)``; the command
``nox -s train`` (``grader/train.py``) runs it on your GPT and your tokenizer.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.loader import load_dep

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
    n = len(data)
    if n < block_size + 1:
        raise ValueError(f"get_batch: data has {n} tokens, fewer than block_size + 1 = {block_size + 1}")
    starts = torch.randint(n - block_size, (batch_size,), generator=generator)  # (B,) in [0, N - T - 1]
    x = torch.stack([torch.from_numpy(np.asarray(data[i : i + block_size], dtype=np.int64)) for i in starts.tolist()])
    y = torch.stack([torch.from_numpy(np.asarray(data[i + 1 : i + 1 + block_size], dtype=np.int64)) for i in starts.tolist()])
    device = torch.device(device)
    if device.type == "cuda":  # page-locked memory lets the copy overlap with compute
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


# ---------------------------------------------------------------- Task 2: estimate_loss


def _autocast(device: torch.device | str, amp_dtype: torch.dtype | None) -> Any:
    kind = torch.device(device).type
    return torch.autocast(device_type=kind, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)


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
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    try:
        with torch.no_grad():
            for split, ids in data.items():
                losses = torch.zeros(eval_iters)
                for k in range(eval_iters):
                    x, y = get_batch(ids, batch_size, block_size, device, generator)
                    with _autocast(device, amp_dtype):
                        _, loss = model(x, y)
                    losses[k] = loss.float().item()
                out[split] = float(losses.mean())
    finally:
        model.train(was_training)
    return out


# ---------------------------------------------------------------- Task 3: the learning-rate schedule


def lr_at(step: int, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based: the first step is step 0).

        step < W:           max_lr * (step + 1) / W                      linear warmup
        W <= step <= S:     min_lr + (max_lr - min_lr) * (1 + cos(pi * (step - W) / (S - W))) / 2
        step > S:           min_lr
    with W = warmup_steps and S = max_steps. The first step already learns (max_lr / W, not 0),
    step W - 1 reaches max_lr, step W starts the cosine at max_lr, and it reaches min_lr at S.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step > max_steps or max_steps <= warmup_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)  # 0 -> 1 over the decay
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


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
    embedding = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():  # parameters() yields a shared (tied) parameter once
        if not p.requires_grad:
            continue
        if p.dim() >= 2 and id(p) not in embedding:
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.95)
) -> torch.optim.AdamW:
    """AdamW over ``param_groups(model, weight_decay)``; the fused kernel on CUDA."""
    on_cuda = next(model.parameters()).device.type == "cuda"
    extra = {"fused": True} if on_cuda else {}
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, **extra)


# ---------------------------------------------------------------- Task 5: gradient clipping


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale all gradients together so that their total L2 norm is at most ``max_norm``.

    total = sqrt(sum over parameters of sum(grad ** 2)), over the parameters that have a .grad.
    Every gradient is multiplied in place by min(1, max_norm / (total + 1e-6)): the direction
    of the whole update is kept, only its length shrinks. Returns ``total`` (before clipping),
    a 0-dim tensor, as ``torch.nn.utils.clip_grad_norm_`` does.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch.stack([torch.linalg.vector_norm(g.detach(), 2.0).to(grads[0].device) for g in grads])  # (P,)
    total = torch.linalg.vector_norm(norms, 2.0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.detach().mul_(coef.to(g.device))
    return total


# ---------------------------------------------------------------- Task 6: one training step (accumulation, AMP)


def precision(device: torch.device | str, amp: bool) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
    """The autocast dtype (None: plain float32) and a GradScaler, through stage 0.2's helpers."""
    env = load_dep("0.2")
    if not amp:
        return None, env.make_grad_scaler(device, torch.float32)
    dtype = env.autocast_dtype(device)
    return dtype, env.make_grad_scaler(device, dtype)


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
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    use_scaler = scaler is not None and scaler.is_enabled()
    k = len(batches)
    total = 0.0
    for x, y in batches:
        with _autocast(x.device, amp_dtype):
            _, loss = model(x, y)
        loss = loss.float() / k  # each micro-batch adds 1/k of the mean gradient
        total += loss.item()
        (scaler.scale(loss) if use_scaler else loss).backward()
    if use_scaler:
        scaler.unscale_(optimizer)  # clipping must see the true gradients
    if grad_clip > 0:
        clip_grad_norm(model.parameters(), grad_clip)
    if use_scaler:
        scaler.step(optimizer)  # skipped when a gradient is inf/NaN
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


# ---------------------------------------------------------------- Task 7: checkpoints


def _rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "generator": generator.get_state() if generator is not None else None,
    }


def _set_rng_state(state: Mapping[str, Any], generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": int(step),
        "config": dict(config),
        "tokenizer": tokenizer_json,
        "tokenizer_sha256": hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest(),
        "train_config": dict(train_config),
        "rng": _rng_state(generator),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    device = next(model.parameters()).device
    ckpt = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(ckpt["model"])
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    rng = ckpt["rng"]
    rng["torch"] = rng["torch"].cpu()  # RNG states are CPU byte tensors whatever map_location said
    rng["cuda"] = [s.cpu() for s in rng.get("cuda") or []]
    if rng.get("generator") is not None:
        rng["generator"] = rng["generator"].cpu()
    _set_rng_state(rng, generator)
    return ckpt


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
    model.train()
    step = start_step
    tokens = cfg.batch_size * cfg.block_size * cfg.grad_accum
    while step < cfg.max_steps:
        if should_stop is not None and should_stop():
            break
        lr = lr_at(step, cfg.max_lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps)
        batches = [get_batch(data["train"], cfg.batch_size, cfg.block_size, device, generator) for _ in range(cfg.grad_accum)]
        loss = train_step(model, optimizer, batches, lr=lr, grad_clip=cfg.grad_clip, amp_dtype=amp_dtype, scaler=scaler)
        step += 1
        val = None
        if cfg.eval_interval > 0 and (step % cfg.eval_interval == 0 or step == cfg.max_steps):
            eval_gen = torch.Generator().manual_seed(cfg.seed + 1)
            val = estimate_loss(model, data, cfg.eval_iters, cfg.batch_size, cfg.block_size, device, eval_gen, amp_dtype)
        if on_step is not None:
            on_step(StepLog(step=step, loss=loss, lr=lr, tokens=tokens, val=val))
    return step
