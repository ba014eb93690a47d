"""``nox -s train -- --nproc N``: stage 2.3's pretraining run on N data-parallel ranks (stage 2.6).

The launcher (``launch``, called by ``grader/train.py``) starts ``python -m torch.distributed.run
--standalone --nproc-per-node N -m grader.distributed_train ARGS``: torchrun picks a free port for
the rendezvous and sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT for each worker.
Every worker (``worker_main``) then runs your stage 2.6 functions (``--version solution``: the
reference ones) around stage 2.3's pieces:

    setup -> prepare (rank 0 first: it builds the cached tokenizer and data) -> broadcast_parameters
    -> per step: this rank's shard of the training windows (shard_indices, reshuffled per epoch),
       backward of each micro-batch, one bucketed all-reduce, clip, AdamW
    -> save_checkpoint (rank 0 writes, everyone waits) -> teardown

Only rank 0 prints, evaluates and writes metrics.json / loss.png; the checkpoint is 2.3's format,
so ``--resume`` (with any number of processes) and ``nox -s generate`` read it. Ctrl-C reaches
torchrun, which sends SIGTERM to the workers: they agree on the step to stop at (an all-reduced
flag), save and exit. Errors are one line (``train: ...``); torchrun's own log goes to
``.llmfs/runs/<run>/torchrun.log``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from grader import train as T
from shared.registry import ROOT

BUCKET_ELEMENTS = 1 << 20  # gradient elements per all-reduce bucket (4 MB of float32)
STATUS_ENV = "LLMFS_DIST_STATUS"  # the folder where ranks leave their outcome for the launcher
ARGV_ENV = "LLMFS_DIST_ARGV"  # the train arguments for the workers (JSON list)


# ----------------------------------------------------------------------------- the launcher


def _strip_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        out.append(a)
    return out


def check_args(args: Any) -> None:
    """Raise UsageError for what --nproc cannot do."""
    n = args.nproc
    if n < 1 or n > 64:
        raise T.UsageError(f"--nproc must be between 1 and 64 processes, got {n}")
    if args.bench:
        raise T.UsageError("--nproc and --bench: time the distributed step with `python -m grader.bench_distributed` instead")
    if args.phase != "pretrain":
        raise T.UsageError(f"--nproc runs the pretraining phase only, not --phase {args.phase}")
    if args.device not in ("auto", "cpu", "cuda"):
        raise T.UsageError(f"--nproc with --device {args.device}: use auto, cpu or cuda (each rank takes cuda:<LOCAL_RANK>)")


def launch(args: Any, argv: list[str], console: Any, err: Any) -> int:
    """Start torchrun with ``args.nproc`` workers; returns the run's exit status (0, 1, 2 or 130)."""
    try:
        check_args(args)
        if args.device in ("auto", "cuda"):
            import torch

            if torch.cuda.is_available() and args.nproc > torch.cuda.device_count():
                raise T.UsageError(f"--nproc {args.nproc}: only {torch.cuda.device_count()} CUDA device(s); one rank per GPU")
            if args.device == "cuda" and not torch.cuda.is_available():
                raise T.UsageError("--device cuda: no CUDA device here")
    except T.UsageError as exc:
        err.print(f"train: {exc}")
        return 2
    folder = T.RUNS_DIR / args.run
    folder.mkdir(parents=True, exist_ok=True)
    status = Path(tempfile.mkdtemp(prefix="llmfs-dist-status-"))
    env = dict(os.environ, **{STATUS_ENV: str(status), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
           "-m", "grader.distributed_train"]  # fmt: skip
    env[ARGV_ENV] = json.dumps(_strip_nproc(argv))  # not on torchrun's command line: its parser would take --run
    log_path = folder / "torchrun.log"
    interrupted: list[int] = []
    shown: set[str] = set()

    def on_signal(signum: int, frame: Any) -> None:
        interrupted.append(signum)  # torchrun got it too (same process group) and stops the workers

    old = signal.signal(signal.SIGINT, on_signal)
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
            assert proc.stderr is not None
            for line in proc.stderr:  # workers' one-line errors pass; torchrun's own chatter goes to the log
                log.write(line)
                if line.startswith("train:") and line not in shown:  # every rank may say the same
                    shown.add(line)
                    err.print(line.rstrip("\n"))
            rc = proc.wait()
    finally:
        signal.signal(signal.SIGINT, old)
    outcome = _read_status(status)
    if outcome is None:
        if interrupted:
            err.print("train: interrupted before training started; nothing saved")
            return 130
        err.print(f"train: the {args.nproc} ranks ended without a result (exit {rc}); torchrun's log: {T._rel(log_path)}")
        return 1
    message = str(outcome.get("message") or "")
    if message and message + "\n" not in shown:  # a rank's error that only it printed, or printed nowhere
        err.print(message)
    return int(outcome["rc"])


def _read_status(folder: Path) -> dict[str, Any] | None:
    found = []
    for f in sorted(folder.glob("rank-*.json")):
        try:
            found.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    for f in folder.glob("*"):
        f.unlink(missing_ok=True)
    folder.rmdir()
    if not found:
        return None
    failed = [o for o in found if o["rc"] not in (0, 130)]
    return min(failed, key=lambda o: o["rank"]) if failed else min(found, key=lambda o: o["rank"])


def _write_status(rank: int, rc: int, message: str = "") -> None:
    folder = os.environ.get(STATUS_ENV)
    if not folder:
        return
    path = Path(folder) / f"rank-{rank}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rank": rank, "rc": rc, "message": message}))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- a worker


def _load_distributed(version: str) -> Any:
    from shared import loader

    try:
        return loader.load("2.6")  # the version _load_stages chose (LLMFS_VERSION)
    except loader.LearnerCodeError as exc:
        raise T.LearnerError(str(exc)) from None


def _windows(data: Any, idx: list[int], block: int, device: Any) -> tuple[Any, Any]:
    """Training windows ``idx`` (window i: tokens i*T .. i*T + T) as x (B, T), y (B, T)."""
    import numpy as np
    import torch

    rows = np.stack([np.asarray(data[i * block : i * block + block + 1], dtype=np.int64) for i in idx])  # (B, T + 1)
    t = torch.from_numpy(rows)
    return t[:, :-1].to(device), t[:, 1:].to(device)


def worker_main(argv: list[str]) -> int:
    from rich.console import Console

    rank = int(os.environ.get("RANK", "0"))
    console = Console(highlight=False, soft_wrap=True, quiet=rank != 0)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    stop = [False]

    def on_signal(signum: int, frame: Any) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    dmod = None
    try:
        args = T.parse_args(argv)
        tok_mod, gpt_mod, pre = T._load_stages(args.version, args.deps)
        dmod = _load_distributed(args.version)
        rc, message = _run(args, tok_mod, gpt_mod, pre, dmod, console, stop)
    except T.UsageError as exc:
        rc, message = 2, f"train: {exc}"
    except T.LearnerError as exc:
        rc, message = 1, f"train: {exc}"
    except KeyboardInterrupt:
        rc, message = 130, ""
    except Exception as exc:  # a collective that failed because another rank died, and the like
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        rc, message = 1, f"train: rank {rank} stopped: {type(exc).__name__}: {first}"
    if message:
        err.print(message)  # the launcher shows each distinct line once
    _write_status(rank, rc, message)
    try:
        if dmod is not None:
            dmod.teardown()
    except Exception:
        pass
    return rc


def _run(args: Any, tok_mod: Any, gpt_mod: Any, pre: Any, d: Any, console: Any, stop: list[bool]) -> tuple[int, str]:
    import numpy as np
    import torch
    import torch.distributed as dist

    info = T.call_learner("stage 2.6 setup", d.setup)
    rank, world = info.rank, info.world_size
    args.device = str(info.device)

    # rank 0 prepares first (it trains / caches the tokenizer and the data); the others then hit the cache
    def prepared(say: Any) -> tuple[Any, str]:
        try:
            return T.prepare(args, tok_mod, gpt_mod, pre, say), ""
        except (T.UsageError, T.LearnerError) as exc:
            return None, f"train: {exc}"

    state, problem = prepared(console.print) if rank == 0 else (None, "")
    verdict = [problem]
    dist.broadcast_object_list(verdict, src=0)
    if verdict[0]:
        return (2 if "not implemented" not in verdict[0] and "raised" not in verdict[0] else 1), verdict[0]
    if rank != 0:
        state, problem = prepared(lambda s: None)
        if problem:
            raise T.UsageError(problem.removeprefix("train: "))
    assert state is not None
    model, opt, cfg = state.model, state.optimizer, state.train_cfg
    T.call_learner("stage 2.6 broadcast_parameters", d.broadcast_parameters, model)
    torch.manual_seed(cfg.seed + 1000 * rank)  # per-rank streams: dropout differs across ranks

    train = state.dataset.train
    block = cfg.block_size
    n_windows = (len(train) - 1) // block
    per_step = cfg.batch_size * cfg.grad_accum
    steps_per_epoch = (n_windows // world) // per_step
    if steps_per_epoch == 0:
        raise T.UsageError(f"the training split has {n_windows} windows of {block} tokens, fewer than "
                           f"--nproc {world} x batch_size {cfg.batch_size} x grad_accum {cfg.grad_accum}; use a longer corpus")
    m = state.metrics
    m["nproc"] = world
    m["tokens_per_step"] = per_step * block * world
    use_scaler = state.scaler is not None and state.scaler.is_enabled()
    eval_gen = torch.Generator().manual_seed(cfg.seed + 7)
    shard: list[int] = []
    shard_epoch = -1
    comm = compute = 0.0
    done = state.start_step
    t_start = time.perf_counter()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("[bold]step"), MofNCompleteColumn(), BarColumn(bar_width=24), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), console=console, disable=rank != 0 or not console.is_terminal)  # fmt: skip
    every = max(1, cfg.max_steps // 40)
    last_val = "val -"
    with progress:
        task = progress.add_task("train", total=cfg.max_steps, completed=done, info="")
        for step in range(state.start_step, cfg.max_steps):
            t0 = time.perf_counter()
            epoch, pos = divmod(step, steps_per_epoch)
            if epoch != shard_epoch:
                shard = T.call_learner("stage 2.6 shard_indices", d.shard_indices, n_windows, rank, world, epoch, cfg.seed)
                shard_epoch = epoch
            lr = pre.lr_at(step, cfg.max_lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps)
            for group in opt.param_groups:
                group["lr"] = lr
            mine = shard[pos * per_step : (pos + 1) * per_step]
            loss_sum = 0.0
            for k in range(cfg.grad_accum):
                x, y = _windows(train, mine[k * cfg.batch_size : (k + 1) * cfg.batch_size], block, info.device)
                with torch.autocast(info.device.type, dtype=state.amp_dtype or torch.float32, enabled=state.amp_dtype is not None):
                    _, loss = model(x, y)
                loss = loss.float() / cfg.grad_accum
                loss_sum += loss.item()
                (state.scaler.scale(loss) if use_scaler else loss).backward()
            t1 = time.perf_counter()
            T.call_learner("stage 2.6 allreduce_gradients_bucketed", d.allreduce_gradients_bucketed, model, BUCKET_ELEMENTS)
            flags = torch.tensor([loss_sum, 1.0 if stop[0] else 0.0], device=info.device)
            dist.all_reduce(flags)  # the mean loss for the log, and whether any rank was asked to stop
            t2 = time.perf_counter()
            if use_scaler:
                state.scaler.unscale_(opt)
            if cfg.grad_clip > 0:
                pre.clip_grad_norm(model.parameters(), cfg.grad_clip)
            if use_scaler:
                state.scaler.step(opt)
                state.scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            done = step + 1
            compute += (t1 - t0) + (time.perf_counter() - t2)
            comm += t2 - t1
            mean_loss = float(flags[0]) / world
            val = None
            if cfg.eval_interval and (done % cfg.eval_interval == 0 or done == cfg.max_steps):
                if rank == 0:
                    val = T.call_learner("stage 2.3 estimate_loss", pre.estimate_loss, model, state.dataset.splits(), cfg.eval_iters,
                                         cfg.batch_size, block, info.device, eval_gen, state.amp_dtype)  # fmt: skip
                dist.barrier()  # the others wait for rank 0's evaluation
            if rank == 0:
                m["history"].append({"step": done, "loss": mean_loss, "lr": lr})
                if val:
                    ev = {"step": done, **{k: float(v) for k, v in val.items()}}
                    ev["val_bpb"] = T.bits_per_byte(ev["val"], m["corpus"]["val_bytes_per_token"])
                    m["evals"].append(ev)
                    last_val = f"val {ev['val']:.3f} ({ev['val_bpb']:.2f} bits/byte)"
                secs = time.perf_counter() - t_start
                tps = (done - state.start_step) * m["tokens_per_step"] / secs if secs > 0 else 0.0
                m["tokens_per_second"] = tps
                info_line = f"loss {mean_loss:.3f}  {last_val}  {tps:,.0f} tok/s on {world} ranks, comm {100 * comm / max(comm + compute, 1e-9):.0f}%"
                if not console.is_terminal and (val or done % every == 0):
                    console.print(f"step {done}/{cfg.max_steps}: train {mean_loss:.3f}, {last_val}, {tps:,.0f} tokens/s, "
                                  f"communication {100 * comm / max(comm + compute, 1e-9):.0f}% of the step")  # fmt: skip
                progress.update(task, completed=done, info=info_line)
            if flags[1] > 0:
                break
    m["train_seconds"] += time.perf_counter() - t_start
    m["compute_seconds"] = compute
    m["communication_seconds"] = comm
    ckpt = {
        "model": model.state_dict(), "optimizer": opt.state_dict(), "step": done, "config": state.gpt_config,
        "tokenizer": state.tokenizer_json, "tokenizer_sha256": m["tokenizer_sha256"],
        "train_config": dataclasses.asdict(cfg),
        "rng": {"torch": torch.get_rng_state(), "cuda": [], "numpy": np.random.get_state(), "python": random.getstate(),
                "generator": state.generator.get_state()},
        "scaler": state.scaler.state_dict() if use_scaler else None,
    }  # fmt: skip
    T.call_learner("stage 2.6 save_checkpoint", d.save_checkpoint, state.folder / "checkpoint.pt", ckpt)
    rel = T._rel(state.folder)
    if rank == 0:
        m["steps"] = done
        m["finished"] = done >= cfg.max_steps
        if m["evals"]:
            m["val_loss"], m["val_bpb"] = m["evals"][-1]["val"], m["evals"][-1]["val_bpb"]
        T.write_json(state.folder / "metrics.json", m)
        try:
            T.plot_loss(state.folder / "loss.png", m)
        except Exception as exc:  # no plot is no reason to lose a run
            console.print(f"(loss.png not written: {type(exc).__name__}: {exc})")
    share = 100 * comm / max(comm + compute, 1e-9)
    if done < cfg.max_steps:
        console.print(f"train: stopped at step {done}; checkpoint saved to {rel}/checkpoint.pt — continue with: "
                      f"nox -s train -- --resume --nproc N" + (f" --run {args.run}" if args.run != "default" else ""))  # fmt: skip
        return 130, ""
    val_text = f"validation {m['val_loss']:.3f} = {m['val_bpb']:.3f} bits/byte" if "val_loss" in m else "no validation estimate"
    console.print(f"done: {done} steps on {world} ranks in {m['train_seconds']:.0f} s, {m.get('tokens_per_second', 0):,.0f} tokens/s"
                  f" (communication {share:.0f}% of the step time); {val_text}. Wrote {rel}/: checkpoint.pt, metrics.json, loss.png.")  # fmt: skip
    return 0, ""


if __name__ == "__main__":
    sys.exit(worker_main(json.loads(os.environ.get(ARGV_ENV, "[]")) + sys.argv[1:]))
