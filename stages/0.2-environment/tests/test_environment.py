"""Graded checks for stage 0.2 — devices, mixed precision, throughput and profiling.

How the GPU branches are checked on any machine: ``fake_machine`` monkeypatches
``torch.cuda.is_available``, ``torch.backends.mps.is_available`` (and their friends:
``device_count``, ``is_built``, ``get_device_capability``, ``is_bf16_supported``,
``is_macos_or_newer``) so that a CPU-only laptop can pretend to be an A100, a T4 or a Mac.
Nothing is run on the pretend device; only the *decisions* are checked.

Reference numbers: the AMP step is compared with ``reference_step`` below, the recipe of
the PyTorch AMP guide (https://pytorch.org/docs/stable/notes/amp_examples.html), run on a
copy of the same model; the throughput formula is checked against a fake clock that
advances by exactly ``FAKE_MATMUL_SECONDS`` per matmul; the profiler checks read
``torch.profiler``'s own tables.
"""

from __future__ import annotations

import builtins
import json
import math
import sys
import time
import timeit
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from shared.testing import check, check_close, fail, likely

# ---------------------------------------------------------------- pretend machines

#: GPUs we can pretend to have: compute capability, and whether bf16 is in hardware.
GPUS = {"A100": ((8, 0), True), "T4": ((7, 5), False)}


def fake_machine(
    monkeypatch: pytest.MonkeyPatch, *, cuda: bool = False, mps: bool = False, gpu: str = "A100", macos: float = 15.0
) -> None:
    """Make torch report this machine's devices (availability only: nothing runs there)."""
    capability, native_bf16 = GPUS[gpu]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if cuda else 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"NVIDIA {gpu}")

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        # Like the real one: a T4 or V100 *emulates* bf16 (slowly) and says True unless asked for hardware support.
        return cuda and (native_bf16 or including_emulation)

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: mps)
    monkeypatch.setattr(torch.mps, "is_available", lambda: mps, raising=False)

    def is_macos_or_newer(major: int, minor: int = 0) -> bool:
        if not mps:
            raise RuntimeError("Cannot execute isOnMacOSorNewer() without MPS backend.")
        return macos >= major + minor / 10

    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", is_macos_or_newer)
    monkeypatch.setattr(torch.backends.mps, "is_macos13_or_newer", lambda minor=0: is_macos_or_newer(13, minor))


def _name(x: Any) -> str:
    if isinstance(x, torch.dtype):
        return str(x).replace("torch.", "")
    if isinstance(x, torch.device):
        return str(x)
    return f"{type(x).__name__} {x!r}"


def check_table(
    got: dict[str, Any], expected: dict[str, Any], *, what: str, mistakes: dict[str, dict[str, Any]] | None = None
) -> None:
    """Fail unless every case matches; name the mistake whose whole table equals ``got``."""
    if all(got[c] == expected[c] for c in expected):
        return
    rows = "\n".join(
        f"  {c:<44} expected {_name(expected[c]):<10} got {_name(got[c])}" + ("" if got[c] == expected[c] else "   <--")
        for c in expected
    )
    named = next((n for n, table in (mistakes or {}).items() if all(got[c] == table[c] for c in expected)), None)
    hint = f"\n  Likely mistake: {named}." if named else ""
    fail(f"{what}:\n{rows}{hint}")


# ---------------------------------------------------------------- Task 1: pick_device

MACHINES = {  # case -> (cuda available, mps available)
    "CPU-only laptop": (False, False),
    "Linux box with an NVIDIA GPU": (True, False),
    "Apple-silicon Mac": (False, True),
    "CUDA and MPS both reported": (True, True),
}


def _device_type(d: Any) -> Any:
    return d.type if isinstance(d, torch.device) else d


@pytest.mark.points(2)
def test_auto_choice_order(impl, monkeypatch: pytest.MonkeyPatch) -> None:
    """pick_device() picks cuda, then mps, then cpu"""
    got: dict[str, Any] = {}
    for case, (cuda, mps) in MACHINES.items():
        fake_machine(monkeypatch, cuda=cuda, mps=mps)
        d = impl.pick_device()
        check(isinstance(d, torch.device), f"pick_device() must return a torch.device, got {_name(d)} ({case})")
        got[case] = d.type
    check_table(
        got,
        {"CPU-only laptop": "cpu", "Linux box with an NVIDIA GPU": "cuda", "Apple-silicon Mac": "mps",
         "CUDA and MPS both reported": "cuda"},
        what="pick_device() on pretend machines (fastest first: cuda > mps > cpu)",
        mistakes={
            "mps preferred over cuda (check CUDA first: it is the faster device)": {
                "CPU-only laptop": "cpu", "Linux box with an NVIDIA GPU": "cuda", "Apple-silicon Mac": "mps",
                "CUDA and MPS both reported": "mps"},
            "cpu chosen although cuda is available (torch.cuda.is_available() not checked)": {
                "CPU-only laptop": "cpu", "Linux box with an NVIDIA GPU": "cpu", "Apple-silicon Mac": "mps",
                "CUDA and MPS both reported": "mps"},
            "mps never chosen (torch.backends.mps.is_available() not checked)": {
                "CPU-only laptop": "cpu", "Linux box with an NVIDIA GPU": "cuda", "Apple-silicon Mac": "cpu",
                "CUDA and MPS both reported": "cuda"},
            "always cpu: availability never checked": dict.fromkeys(MACHINES, "cpu"),
        },
    )


def test_explicit_choice_honoured(impl, monkeypatch: pytest.MonkeyPatch) -> None:
    """an explicit choice is honoured: pick_device("cpu") is the CPU even next to a GPU"""
    fake_machine(monkeypatch, cuda=True, mps=True)
    got = {f'pick_device("{p}")': _device_type(impl.pick_device(p)) for p in ("cpu", "cuda", "mps")}
    check_table(
        got, {'pick_device("cpu")': "cpu", 'pick_device("cuda")': "cuda", 'pick_device("mps")': "mps"},
        what="pick_device(prefer) with CUDA and MPS both available",
        mistakes={"prefer ignored (the automatic choice is returned)": dict.fromkeys(got, "cuda")},
    )
    d = impl.pick_device("cpu")
    check(isinstance(d, torch.device), f'pick_device("cpu") must return a torch.device, got {_name(d)}')


HOW_WORDS = {
    "cuda": ("install", "pip", "driver", "build", "wheel", "nvidia", "pytorch.org", "doctor"),
    "mps": ("install", "pip", "macos", "apple", "mac ", "build", "wheel", "doctor"),
}


def test_absent_device_raises(impl, monkeypatch: pytest.MonkeyPatch) -> None:
    """asking for an absent device raises RuntimeError naming it and saying how to get it"""
    fake_machine(monkeypatch, cuda=False, mps=False)
    for name in ("cuda", "mps"):
        try:
            d = impl.pick_device(name)
        except NotImplementedError:
            raise
        except RuntimeError as exc:
            msg = str(exc).lower()
            check(name in msg, f'pick_device("{name}") on a CPU-only machine: the RuntimeError must name {name!r}; got {exc!r}')
            check(
                any(w in msg for w in HOW_WORDS[name]),
                f'pick_device("{name}"): the error should also say how to get {name} (e.g. which build to install);'
                f" got {exc!r}",
            )
            continue
        except Exception as exc:  # the wrong kind of error
            fail(f'pick_device("{name}") on a CPU-only machine: expected RuntimeError, got {type(exc).__name__}: {exc}')
        hint = ""
        if _device_type(d) == "cpu":
            hint = ("\n  Likely mistake: silent fallback to cpu — an explicit request for a missing device must fail"
                    " loudly, or a 10-hour run quietly happens on the CPU.")
        fail(f'pick_device("{name}") on a CPU-only machine returned {_name(d)}; expected a RuntimeError{hint}')


def test_absent_cuda_index_raises(impl, monkeypatch: pytest.MonkeyPatch) -> None:
    """pick_device("cuda:N") for an index that does not exist raises RuntimeError; "cuda:0" is that device"""
    fake_machine(monkeypatch, cuda=True, mps=False)  # one GPU: torch.cuda.device_count() == 1
    d = impl.pick_device("cuda:0")
    check(isinstance(d, torch.device) and d.type == "cuda" and d.index in (0, None),
          f'pick_device("cuda:0") with one GPU should be cuda:0, got {_name(d)}')
    try:
        d = impl.pick_device("cuda:3")
    except NotImplementedError:
        raise
    except RuntimeError as exc:
        check("3" in str(exc), f'pick_device("cuda:3") with one GPU: the RuntimeError should name the index 3; got {exc!r}')
        return
    except Exception as exc:  # the wrong kind of error
        fail(f'pick_device("cuda:3") with one GPU: expected RuntimeError, got {type(exc).__name__}: {exc}')
    fail(f'pick_device("cuda:3") on a machine with one GPU (cuda:0) returned {_name(d)}; expected a RuntimeError:'
         " the first use of that device would fail far from the cause."
         + likely("the index in cuda:N not checked against torch.cuda.device_count()"))


def test_unknown_name_raises(impl, monkeypatch: pytest.MonkeyPatch) -> None:
    """an unknown device name ("gpu") raises ValueError"""
    fake_machine(monkeypatch, cuda=True, mps=False)
    for name in ("gpu", "tpu"):
        try:
            d = impl.pick_device(name)
        except NotImplementedError:
            raise
        except ValueError:
            continue
        except RuntimeError as exc:
            fail(f'pick_device("{name}"): expected ValueError, got RuntimeError: {str(exc)[:120]}\n'
                 "  Likely mistake: the name passed straight to torch.device (which raises RuntimeError); check it"
                 " against cuda / mps / cpu first and raise ValueError.")
        except Exception as exc:
            fail(f'pick_device("{name}"): expected ValueError, got {type(exc).__name__}: {exc}')
        fail(f'pick_device("{name}") returned {_name(d)}; expected ValueError (known devices: cuda, mps, cpu)')


# ---------------------------------------------------------------- Task 2: autocast_dtype

BF16, FP16 = torch.bfloat16, torch.float16


@pytest.mark.points(2)
def test_dtype_table(impl, monkeypatch: pytest.MonkeyPatch) -> None:
    """autocast_dtype: bf16 on CPU and on GPUs with bf16 in hardware, fp16 on older GPUs"""
    got: dict[str, Any] = {}
    fake_machine(monkeypatch)
    got["cpu"] = impl.autocast_dtype(torch.device("cpu"))
    got['"cpu" (a string)'] = impl.autocast_dtype("cpu")
    for gpu in GPUS:
        fake_machine(monkeypatch, cuda=True, gpu=gpu)
        got[f"cuda on an {gpu}"] = impl.autocast_dtype(torch.device("cuda"))
    fake_machine(monkeypatch, cuda=True, gpu="A100")
    got["cuda:0 on an A100"] = impl.autocast_dtype(torch.device("cuda", 0))
    expected = {"cpu": BF16, '"cpu" (a string)': BF16, "cuda on an A100": BF16, "cuda on an T4": FP16,
                "cuda:0 on an A100": BF16}
    check_table(
        got, expected, what="autocast_dtype(device) on pretend machines",
        mistakes={
            "fp16 chosen on CPU (CPU kernels are tuned for bf16; fp16 there is slow and needs loss scaling)": {
                **expected, "cpu": FP16, '"cpu" (a string)': FP16},
            "bf16 chosen on a GPU without bf16 in hardware (a T4 only emulates it: use"
            " torch.cuda.is_bf16_supported(including_emulation=False))": {**expected, "cuda on an T4": BF16},
            "fp16 on every GPU (an A100 has bf16: check torch.cuda.is_bf16_supported(including_emulation=False))": {
                **expected, "cuda on an A100": FP16, "cuda:0 on an A100": FP16},
        },
    )


def test_dtype_mps(impl, monkeypatch: pytest.MonkeyPatch) -> None:
    """autocast_dtype on MPS: bf16 on macOS 14+, fp16 before"""
    got: dict[str, Any] = {}
    for macos in (15.0, 14.0, 13.5):
        fake_machine(monkeypatch, mps=True, macos=macos)
        got[f"mps on macOS {macos:g}"] = impl.autocast_dtype(torch.device("mps"))
    expected = {"mps on macOS 15": BF16, "mps on macOS 14": BF16, "mps on macOS 13.5": FP16}
    check_table(
        got, expected, what="autocast_dtype(mps) (decide with torch.backends.mps.is_macos_or_newer(14, 0))",
        mistakes={
            "fp16 on every Mac (bf16 works on MPS from macOS 14)": dict.fromkeys(expected, FP16),
            "bf16 on every Mac (before macOS 14 MPS has no bf16)": dict.fromkeys(expected, BF16),
        },
    )


# ---------------------------------------------------------------- Task 3: make_grad_scaler and amp_train_step


@pytest.mark.points(2)
def test_grad_scaler_decision(impl, monkeypatch: pytest.MonkeyPatch) -> None:
    """make_grad_scaler enables loss scaling for fp16 only, on the given device"""
    # GradScaler("cuda", enabled=True) disables itself (with a warning) when CUDA is absent; pretending
    # CUDA is available keeps it enabled, and creating one touches no GPU.
    fake_machine(monkeypatch, cuda=True, mps=True)
    cases = {
        ("cpu", BF16): False, ("cpu", torch.float32): False, ("cuda", FP16): True, ("cuda", BF16): False,
        ("cuda", torch.float32): False, ("mps", FP16): True, ("mps", BF16): False,
    }
    got: dict[str, Any] = {}
    for (dev, dtype), _on in cases.items():
        s = impl.make_grad_scaler(torch.device(dev), dtype)
        check(isinstance(s, torch.amp.GradScaler),
              f"make_grad_scaler({dev!r}, {_name(dtype)}) must return a torch.amp.GradScaler, got {_name(s)}")
        made_for = getattr(s, "_device", dev)
        check(made_for == dev, f"make_grad_scaler({dev!r}, {_name(dtype)}) made a GradScaler for {made_for!r};"
                               f" pass the device type: torch.amp.GradScaler({dev!r}, enabled=...)")
        got[f"{dev}, {_name(dtype)}"] = "enabled" if s.is_enabled() else "disabled"
    expected = {f"{d}, {_name(t)}": "enabled" if on else "disabled" for (d, t), on in cases.items()}
    check_table(
        got, expected, what="make_grad_scaler(device, dtype).is_enabled()",
        mistakes={
            "GradScaler used for bf16 (bf16 has float32's exponent range: nothing underflows, no scaling needed)": {
                f"{d}, {_name(t)}": "enabled" if t in (FP16, BF16) else "disabled" for (d, t) in cases},
            "GradScaler not used for fp16 (fp16 gradients underflow to zero without loss scaling)": dict.fromkeys(
                expected, "disabled"),
            "GradScaler enabled for every dtype": dict.fromkeys(expected, "enabled"),
        },
    )


def regression_data(n: int = 32, d_in: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A tiny linear regression: targets (n, 1) = x (n, d_in) @ w + 3, with large weights so gradients are large."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)  # (n, d_in)
    w = torch.tensor([[3.0], [-2.0], [1.5], [4.0]])[:d_in]  # (d_in, 1)
    return x, x @ w + 3.0  # (n, 1)


class TinySGD:
    """Plain SGD, duck-typed as a torch.optim.Optimizer (param_groups, step, zero_grad).

    Why not torch.optim.SGD: in recent PyTorch the first optimizer constructed in a process imports the
    torch.compile stack (about 3 s), and graded checks must feel instant. GradScaler only needs
    ``param_groups`` and ``step()``.
    """

    def __init__(self, params: Any, lr: float) -> None:
        self.param_groups: list[dict[str, Any]] = [{"params": list(params), "lr": lr}]

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()


def tiny_model() -> nn.Linear:
    m = nn.Linear(4, 1)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[0.5, -0.25, 0.125, 0.0]]))
        m.bias.fill_(0.1)
    return m


def reference_step(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None, device: torch.device, dtype: torch.dtype, max_grad_norm: float,
    mistake: str = "",
) -> float:
    """The AMP guide's recipe (or a named mistake's version of it), for comparison."""
    x, y = (t.to(device) for t in batch)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype in (FP16, BF16)):
        loss = F.mse_loss(model(x).float(), y)
    scaled = scaler is not None and scaler.is_enabled()
    if scaled:
        scaler.scale(loss).backward()
        if mistake == "clip before unscale":
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            scaler.unscale_(optimizer)
        else:
            scaler.unscale_(optimizer)
            if mistake != "no clip":
                nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        scaler.step(optimizer)
        if mistake == "double step":
            optimizer.step()
        scaler.update()
    else:
        loss.backward()
        if mistake != "no clip":
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
    if mistake != "no zero_grad":
        optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _params(m: nn.Module) -> torch.Tensor:
    """All parameters flattened into one float32 CPU vector."""
    return torch.cat([p.detach().float().cpu().reshape(-1) for p in m.parameters()])


def run_steps(
    step: Callable[..., Any], *, device: torch.device, dtype: torch.dtype, steps: int, lr: float, max_grad_norm: float,
    scaler: Callable[[], torch.amp.GradScaler | None], **kw: Any,
) -> tuple[list[Any], torch.Tensor]:
    """Train a fresh tiny_model with ``step`` for ``steps`` batches; return (losses, final parameters)."""
    model = tiny_model().to(device)
    opt = TinySGD(model.parameters(), lr=lr)
    s = scaler()
    losses = [step(model, regression_data(seed=i), opt, s, device, dtype, max_grad_norm, **kw) for i in range(steps)]
    return losses, _params(model)


def test_amp_steps_lower_the_loss(impl, setting) -> None:
    """a few AMP steps lower the loss of a tiny regression and leave no inf/NaN"""
    device = setting.torch_device
    dtype = setting.amp_dtype or torch.float32
    fp16 = dtype == FP16
    model = tiny_model().to(device)
    opt = TinySGD(model.parameters(), lr=0.1)
    # fp16: an enabled scaler; bf16: a disabled one (it must pass through); float32: None.
    # (init_scale 2^10, not the default 2^16: at 2^16 the first steps overflow in fp16 and are skipped.)
    scaler = torch.amp.GradScaler(device.type, init_scale=1024.0, enabled=fp16) if dtype != torch.float32 else None
    x, y = regression_data(n=64)
    losses = []
    for _ in range(6):
        loss = impl.amp_train_step(model, (x, y), opt, scaler, device, dtype, 5.0)
        losses.append(loss)
    setting.sync()
    shown = ", ".join(f"{v:.4g}" if isinstance(v, float) else _name(v) for v in losses)
    check(all(isinstance(v, float) for v in losses), f"amp_train_step must return loss.item(), a float; got [{shown}]")
    check(all(math.isfinite(v) for v in losses), f"{setting.id}: non-finite loss in [{shown}]")
    check(bool(torch.isfinite(_params(model)).all()), f"{setting.id}: the parameters hold inf/NaN after 6 steps")
    check(losses[-1] < 0.7 * losses[0],
          f"{setting.id}: 6 steps (SGD, lr=0.1, max_grad_norm=5) should lower the loss by more than 30%; losses were [{shown}]"
          " — is optimizer.step() (or scaler.step(optimizer)) called, and the gradient zeroed after each step?")


class AutocastProbe(nn.Module):
    """tiny_model's Linear, recording in forward whether autocast was on and with which dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_model()
        self.seen: list[tuple[bool, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dev = x.device.type
        self.seen.append((torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev)))
        return self.inner(x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
def test_amp_forward_runs_under_autocast(impl, dtype: torch.dtype) -> None:
    """the AMP step's forward runs under torch.autocast with the dtype asked for (and without it for float32)"""
    model = AutocastProbe()
    opt = TinySGD(model.parameters(), lr=0.1)
    x, y = regression_data(n=16)
    impl.amp_train_step(model, (x, y), opt, None, "cpu", dtype, 5.0)
    check(len(model.seen) == 1, f"amp_train_step should run the model's forward once per step; it ran {len(model.seen)} times")
    enabled, seen = model.seen[0]
    name = _name(dtype)
    if dtype == torch.float32:
        check(not enabled, f"dtype=float32 must turn autocast off, but the forward ran under autocast to {_name(seen)}"
              + likely("autocast left on for float32 (enabled=... not set from the dtype)"))
        return
    check(enabled, f"dtype={name}: the forward ran without autocast, in float32; it must run under"
          f" torch.autocast(device_type=device.type, dtype={name})" + likely("the forward not wrapped in torch.autocast"))
    check(seen == dtype, f"dtype={name}: the forward ran under autocast to {_name(seen)}, not {name}"
          + likely("the autocast dtype hard-coded instead of the dtype argument"))


class RecordingScaler(torch.amp.GradScaler):
    """A real CPU GradScaler that also records which of its methods were called, in order."""

    def __init__(self) -> None:
        super().__init__("cpu", init_scale=4.0)
        self.calls: list[str] = []

    def scale(self, outputs: Any) -> Any:
        self.calls.append("scale")
        return super().scale(outputs)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        self.calls.append("unscale_")
        super().unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("step")
        return super().step(optimizer, *args, **kwargs)

    def update(self, new_scale: Any = None) -> None:
        self.calls.append("update")
        super().update(new_scale)


def test_fp16_step_uses_the_scaler(impl) -> None:
    """with an enabled fp16 scaler the step calls scale, unscale_, step, update — in that order"""
    model = tiny_model()
    opt = TinySGD(model.parameters(), lr=0.05)
    scaler = RecordingScaler()
    impl.amp_train_step(model, regression_data(), opt, scaler, torch.device("cpu"), FP16, 1.0)
    want = ["scale", "unscale_", "step", "update"]
    if scaler.calls == want:
        return
    hint = ""
    if not scaler.calls:
        hint = ("\n  Likely mistake: GradScaler not used for fp16 — loss.backward() and optimizer.step() called"
                " directly, so small fp16 gradients underflow to zero.")
    elif "unscale_" not in scaler.calls:
        hint = ("\n  Likely mistake: no scaler.unscale_(optimizer) before clipping, so clip_grad_norm_ sees gradients"
                " multiplied by the loss scale.")
    elif "update" not in scaler.calls:
        hint = "\n  Likely mistake: scaler.update() missing — the loss scale then never adapts."
    fail(f"an fp16 step with an enabled GradScaler: expected the calls {want}, got {scaler.calls}{hint}")


@pytest.mark.points(2)
def test_gradients_unscaled_before_clipping(impl) -> None:
    """fp16 step: gradients are unscaled before clipping, so the update matches the reference"""
    cpu = torch.device("cpu")

    def scaler() -> torch.amp.GradScaler:
        return torch.amp.GradScaler("cpu", init_scale=4.0)  # small scale: every mistake changes the update visibly

    common = {"device": cpu, "dtype": FP16, "steps": 1, "lr": 0.1, "max_grad_norm": 1.0, "scaler": scaler}
    losses, got = run_steps(impl.amp_train_step, **common)
    (ref_loss,), expected = run_steps(reference_step, **common)
    check(isinstance(losses[0], float), f"amp_train_step must return loss.item(), a float; got {_name(losses[0])}")
    check_close(
        losses[0], ref_loss, what="the returned loss", atol=1e-3, rtol=1e-2,
        reference="mse_loss(model(x).float(), y) under fp16 autocast, before the update",
        mistakes={"returned the scaled loss (scaler.scale(loss)) instead of the loss": ref_loss * 4.0},
    )
    check_close(
        got, expected, what="parameters (weight, bias) after one fp16 step (lr=0.1, max_grad_norm=1.0, loss scale 4)",
        atol=1e-3, rtol=1e-3, reference="the AMP guide's recipe: scale, backward, unscale_, clip, step, update",
        mistakes={
            "clipping before unscale_ (the clip saw gradients multiplied by the loss scale)": (
                lambda: run_steps(reference_step, **common, mistake="clip before unscale")[1]),
            "no gradient clipping (clip_grad_norm_ missing)": lambda: run_steps(reference_step, **common,
                                                                                 mistake="no clip")[1],
            "optimizer stepped twice (scaler.step(optimizer) already calls optimizer.step())": (
                lambda: run_steps(reference_step, **common, mistake="double step")[1]),
        },
    )


def test_plain_steps_match_reference(impl) -> None:
    """two float32 steps without a scaler match the reference (gradients cleared between steps)"""
    common = {"device": torch.device("cpu"), "dtype": torch.float32, "steps": 2, "lr": 0.05, "max_grad_norm": 1e6,
              "scaler": lambda: None}
    losses, got = run_steps(impl.amp_train_step, **common)
    ref_losses, expected = run_steps(reference_step, **common)
    check(all(isinstance(v, float) for v in losses),
          f"amp_train_step must return loss.item(), a float; got {[_name(v) for v in losses]}"
          + ("\n  Likely mistake: returned the loss tensor instead of loss.item()."
             if any(isinstance(v, torch.Tensor) for v in losses) else ""))
    check_close(torch.tensor(losses), torch.tensor(ref_losses), what="the losses returned by two steps",
                reference="mse_loss(model(x).float(), y) before each update")
    check_close(
        got, expected, what="parameters after two float32 steps (scaler=None, autocast off)",
        reference="loss.backward(), clip, optimizer.step(), zero_grad",
        mistakes={"gradients not zeroed between steps (optimizer.zero_grad() missing, so they pile up)": (
            lambda: run_steps(reference_step, **common, mistake="no zero_grad")[1])},
    )


# ---------------------------------------------------------------- Task 4: matmul_tflops

FAKE_MATMUL_SECONDS = 1e-3
MATMUL_NAMES = {"matmul", "mm", "__matmul__", "__rmatmul__", "addmm", "einsum", "bmm"}


class FakeClock(TorchFunctionMode):
    """A clock that only moves when a matmul runs: each one takes exactly FAKE_MATMUL_SECONDS."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 1000.0
        self.reads = 0
        self.matmuls = 0
        self.matmuls_before_first_read: int | None = None

    def now(self) -> float:
        if self.matmuls_before_first_read is None:
            self.matmuls_before_first_read = self.matmuls
        self.reads += 1
        return self.t

    def now_ns(self) -> int:
        return int(round(self.now() * 1e9))

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") in MATMUL_NAMES:
            self.matmuls += 1
            self.t += FAKE_MATMUL_SECONDS
        return out


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    clock = FakeClock()
    for name in ("perf_counter", "monotonic", "time"):
        monkeypatch.setattr(time, name, clock.now)
        monkeypatch.setattr(time, name + "_ns", clock.now_ns)
    monkeypatch.setattr(timeit, "default_timer", clock.now)
    with clock:
        yield clock


@pytest.mark.points(2)
def test_tflops_formula(impl, fake_clock: FakeClock) -> None:
    """matmul_tflops reports 2n³ / (seconds per matmul) / 1e12"""
    n, repeats = 16, 4
    got = impl.matmul_tflops(n=n, device=torch.device("cpu"), dtype=torch.float32, repeats=repeats)
    check(fake_clock.reads >= 2, "matmul_tflops never read the clock twice: time the matmuls with time.perf_counter()"
                                 " (called as time.perf_counter(), so this check can swap in its fake clock)")
    check(fake_clock.matmuls >= repeats,
          f"matmul_tflops(repeats={repeats}) ran {fake_clock.matmuls} matmuls; expected at least {repeats}")
    expected = 2 * n**3 / FAKE_MATMUL_SECONDS / 1e12
    check_close(
        got, expected, what=f"matmul_tflops(n={n}, repeats={repeats}) with a clock where one matmul takes 1 ms",
        atol=0.0, rtol=1e-6, reference="2 n^3 FLOPs per matmul / seconds per matmul / 1e12",
        mistakes={
            "n³ FLOPs instead of 2n³ (a multiply-add is two operations)": expected / 2,
            "total time not divided by the number of repeats": expected / repeats,
            "the warm-up matmul is inside the timed region": expected * repeats / (repeats + 1),
            "GFLOP/s instead of TFLOP/s (divided by 1e9, not 1e12)": expected * 1000,
        },
    )


def test_tflops_warm_up(impl, fake_clock: FakeClock) -> None:
    """a warm-up matmul runs before the clock starts"""
    impl.matmul_tflops(n=8, device=torch.device("cpu"), dtype=torch.float32, repeats=3)
    before = fake_clock.matmuls_before_first_read
    check(before is not None, "matmul_tflops never read the clock (use time.perf_counter())")
    check(before >= 1, "the clock started before any matmul ran.\n  Likely mistake: no warm-up — the first call pays for"
                       " lazy initialisation and kernel selection (seconds on a GPU); run one untimed matmul first.")


class MatmulRecorder(TorchFunctionMode):
    """Records (device type, dtype) of the first operand of every matmul."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, torch.dtype]] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if getattr(func, "__name__", "") in ("matmul", "__matmul__", "mm", "__rmatmul__") and args and torch.is_tensor(args[0]):
            self.seen.add((args[0].device.type, args[0].dtype))
        return func(*args, **(kwargs or {}))


def test_tflops_on_this_device(impl, setting, monkeypatch: pytest.MonkeyPatch) -> None:
    """matmul_tflops gives a positive, physically possible rate here (synchronised on GPUs)"""
    syncs: list[str] = []
    if setting.device in ("cuda", "mps"):
        mod = torch.cuda if setting.device == "cuda" else torch.mps
        targets = [(mod, "synchronize"), (mod.Event, "synchronize"), (mod.Event, "elapsed_time")]
        if setting.device == "cuda":
            targets.append((torch.cuda.Stream, "synchronize"))
        for owner, name in targets:
            original = getattr(owner, name)

            def recorder(*args: Any, _orig: Any = original, _name: str = f"{owner.__name__}.{name}", **kw: Any) -> Any:
                syncs.append(_name)
                return _orig(*args, **kw)

            monkeypatch.setattr(owner, name, recorder)
    dtype = setting.amp_dtype or torch.float32
    recorder = MatmulRecorder()
    with recorder:
        rate = impl.matmul_tflops(n=32, device=setting.torch_device, dtype=dtype, repeats=2)
    where = sorted({f"{dev} {_name(dt)}" for dev, dt in recorder.seen})
    check(recorder.seen, "matmul_tflops ran no matmul (a @ b, torch.matmul or torch.mm) that torch could see")
    check((setting.device, dtype) in recorder.seen,
          f"{setting.id}: matmul_tflops(device={setting.device!r}, dtype={_name(dtype)}) multiplied on {where}, not on"
          f" {setting.device} in {_name(dtype)}: make both matrices with device=device, dtype=dtype"
          + likely("the matrices made without device= / dtype=, so the matmul runs on the CPU in float32"))
    check(isinstance(rate, float), f"matmul_tflops must return a float, got {_name(rate)}")
    check(math.isfinite(rate) and rate > 0,
          f"{setting.id}: matmul_tflops returned {rate!r}; expected a positive finite rate"
          " (a zero elapsed time? time.time() is too coarse on some systems: use time.perf_counter())")
    check(rate < 5000, f"{setting.id}: {rate:.4g} TFLOP/s is beyond any chip made (an H100 does ~1000 in bf16):"
                       " the clock stopped before the kernels finished, or the units are off")
    if setting.device in ("cuda", "mps"):
        check(syncs, f"{setting.id}: the clock was read without synchronising.\n  Likely mistake: no synchronisation"
                     f" — GPU kernels run asynchronously; call torch.{setting.device}.synchronize() before reading the"
                     " clock (or time with CUDA events).")


# ---------------------------------------------------------------- Task 5: profiling


@pytest.fixture
def fast_profiler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep torch.profiler from importing the torch.compile stack (~1 s) on its first use.

    ``torch.profiler.profile`` asks ``hasattr(torch, "_inductor")`` to read a CUDA-graphs flag; that lazily imports
    torch._inductor. When nothing has imported it, the flag cannot matter, so answer False without importing.
    """
    import torch.profiler.profiler as pp

    def _hasattr(obj: object, name: str) -> bool:
        if obj is torch and name == "_inductor" and "torch._inductor" not in sys.modules:
            return False
        return builtins.hasattr(obj, name)

    monkeypatch.setattr(pp, "hasattr", _hasattr, raising=False)


def matmul_heavy() -> torch.Tensor:
    """Three (96, 96) @ (96, 96) matmuls and a ReLU: aten::mm should dominate self time."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(96, 96, generator=g), torch.randn(96, 96, generator=g)  # (96, 96) each
    for _ in range(3):
        a = torch.matmul(a, b).relu() * 0.1  # (96, 96)
    return a


MATMUL_OPS = ("aten::mm", "aten::matmul", "aten::addmm")


def test_profile_names_the_matmul(impl, fast_profiler: None) -> None:
    """top_ops_by_self_time names the matmuls of a matmul-heavy function, largest first"""
    top = impl.top_ops_by_self_time(matmul_heavy, k=3, device=torch.device("cpu"))
    check(top != [], "top_ops_by_self_time returned []: the profile recorded no operators — was fn called inside the"
                     " profiler context (`with torch.profiler.profile(...) as prof: fn()`)?")
    check(isinstance(top, list) and len(top) == 3, f"top_ops_by_self_time(fn, k=3) must return a list of 3"
                                                   f" (name, microseconds) pairs; got {top!r}"[:300])
    for entry in top:
        check(isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)
              and isinstance(entry[1], (int, float)),
              f"each entry must be a (op name, self time in us) tuple; got {entry!r}")
    times = [float(t) for _, t in top]
    check(all(t >= 0 for t in times) and times == sorted(times, reverse=True),
          f"entries must be sorted by self time, largest first; got {top}")
    names = [n for n, _ in top]
    check(any(n in MATMUL_OPS for n in names),
          f"three 96x96 matmuls dominate this function, yet none of {MATMUL_OPS} is among the top 3: {top}"
          "\n  (was fn called inside the profiler context?)")


def test_profile_uses_self_time(impl, fast_profiler: None) -> None:
    """operators are ranked by self time: aten::mm above aten::matmul"""
    ops = dict(impl.top_ops_by_self_time(matmul_heavy, k=100, device=torch.device("cpu")))
    check("aten::mm" in ops, f"aten::mm missing from all operators of a matmul-heavy function: {sorted(ops)}")
    if "aten::matmul" in ops and ops["aten::matmul"] >= ops["aten::mm"]:
        fail(f"aten::matmul {ops['aten::matmul']:.1f} us >= aten::mm {ops['aten::mm']:.1f} us, but aten::matmul only"
             " dispatches to aten::mm: its own (self) time is tiny.\n  Likely mistake: ranked by total time"
             " (cpu_time_total, which includes the ops it calls) instead of self time (self_cpu_time_total).")


def test_chrome_trace(impl, fast_profiler: None, tmp_path: Path) -> None:
    """export_chrome_trace writes valid JSON whose traceEvents include the matmul"""
    path = tmp_path / "trace.json"
    out = impl.export_chrome_trace(matmul_heavy, path)
    check(out is not None and Path(out) == path, f"export_chrome_trace must return the path it wrote ({path}); got {out!r}")
    check(path.is_file(), f"export_chrome_trace did not create {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        fail(f"{path.name} is not valid JSON: {exc}")
    events = data.get("traceEvents") if isinstance(data, dict) else None
    check(isinstance(events, list) and events, f"the trace must be an object with a non-empty 'traceEvents' list;"
                                               f" got keys {sorted(data) if isinstance(data, dict) else type(data)}")
    names = {e.get("name") for e in events if isinstance(e, dict)}
    check(any(n in MATMUL_OPS for n in names), f"no matmul operator among the trace's events: {sorted(map(str, names))[:12]}")

