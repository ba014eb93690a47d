"""``python -m grader.doctor``: is this Python environment ready for the course?

Usage::

    python -m grader.doctor [--json PATH] [--compile] [--verbose]

Checks the *active* environment (``nox -s doctor`` runs exactly this) and prints one row
per check, each ``pass`` / ``warn`` / ``fail`` / ``absent`` with a one-line fix:

- Python and the PyTorch build (a CPU-only build on a machine with an NVIDIA GPU is a warn,
  with the exact pip command that fixes it);
- CUDA (each device: name, compute capability, bf16, TF32, a real kernel), cuDNN, Apple MPS;
- autocast for each device and dtype, actually run; a GradScaler step; the
  scaled-dot-product-attention backends that really run; the profiler;
- ``torch.compile`` (only with ``--compile``: it takes a while);
- numpy, pytest, pytest-timeout, nox and rich against the ranges in ``requirements.txt``.

``absent`` means "this machine does not have it" (no CUDA on a laptop): not an error. A backend
that is absent altogether (CUDA, MPS) is folded into one line ("CUDA: no device — 12 checks not
run"); ``--verbose`` prints every row. The JSON always holds every row.
The fix for a missing or mismatched torch is the exact command for this machine, from the
README's "Install PyTorch" table (the one source of truth for which build to install).
Exit status: 0 unless a ``fail`` row says something a stage needs is broken (1); 2 for bad flags.

``--json PATH`` writes the same report, atomically, as::

    {
      "schema": 1,
      "created": "2025-01-01T12:00:00+00:00",       # UTC, ISO 8601
      "python": "3.11.7", "platform": "Linux-6.1-x86_64", "torch": "2.5.1+cpu" | null,
      "exit_code": 0,
      "counts": {"pass": 20, "warn": 0, "fail": 0, "absent": 9},
      "rows": [
        {"section": "CUDA", "check": "CUDA devices", "status": "absent",
         "detail": "CPU-only PyTorch build", "fix": "", "seconds": 0.0},
        ...
      ]
    }

Each check runs guarded: an exception inside a check becomes that check's ``fail`` row.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT: Path = Path(__file__).resolve().parent.parent
REQUIREMENTS: Path = ROOT / "requirements.txt"
STATUSES: tuple[str, ...] = ("pass", "warn", "fail", "absent")
#: Packages the course needs besides torch (which has its own rows).
PACKAGES: tuple[str, ...] = ("numpy", "pytest", "pytest-timeout", "nox", "rich")
MIN_PYTHON: tuple[int, int] = (3, 10)
#: The CUDA wheel indexes download.pytorch.org publishes for current torch releases (2.9 and later),
#: newest first: (the driver's CUDA version they need, index tag). Keep in step with the README's
#: "Install PyTorch" table; older indexes (cu124, cu121, cu118) stop at older torch versions.
CUDA_WHEELS: tuple[tuple[tuple[int, int], str], ...] = (((13, 0), "cu130"), ((12, 8), "cu128"), ((12, 6), "cu126"))
#: Where the README explains the choice.
INSTALL_DOCS = 'README "Install PyTorch"'
WHEEL_INDEX = "https://download.pytorch.org/whl"
SCHEMA = 1


@dataclass
class Row:
    section: str  # "PyTorch", "CUDA", "Autocast", ...
    check: str  # what was checked, e.g. "autocast cuda float16"
    status: str  # one of STATUSES
    detail: str = ""  # what was found, one line
    fix: str = ""  # what to do about a warn / fail, one line
    seconds: float = 0.0  # how long the check took

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"bad status {self.status!r}")


@dataclass
class Context:
    """What the checks share: the torch module (None when it does not import) and the options."""

    torch: Any = None
    torch_error: str = ""
    run_compile: bool = False
    requirements: dict[str, str] = field(default_factory=dict)
    requirements_error: str = ""


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


# ---------------------------------------------------------------- requirements and versions


def parse_requirements(text: str) -> dict[str, str]:
    """``name -> specifier`` ("numpy" -> ">=1.24") from requirements.txt text; comments, options, markers dropped."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$", line)
        if m:
            out[canonical(m.group(1))] = m.group(3).replace(" ", "")
    return out


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _release(version: str) -> tuple[int, ...]:
    """(2, 5, 1) from "2.5.1+cu124" / "2.6.0.dev20241101" / "2024.4.15": the numeric release part."""
    parts = []
    for piece in re.split(r"[.+!-]", version):
        m = re.match(r"^(\d+)", piece)
        if not m:
            break
        parts.append(int(m.group(1)))
        if m.group(1) != piece:
            break
    return tuple(parts)


def _cmp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (a > b) - (a < b)


def version_satisfies(version: str, spec: str) -> bool:
    """Does ``version`` meet ``spec`` (">=1.24,<3")? Uses ``packaging`` when installed, else a simple comparison."""
    if not spec:
        return True
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import Version

        return SpecifierSet(spec).contains(Version(version), prereleases=True)
    except ImportError:
        pass
    except Exception:  # a version packaging cannot parse: fall back to the simple comparison
        pass
    have = _release(version)
    ops: dict[str, Callable[[int], bool]] = {
        ">=": lambda c: c >= 0, "<=": lambda c: c <= 0, ">": lambda c: c > 0, "<": lambda c: c < 0,
        "==": lambda c: c == 0, "!=": lambda c: c != 0, "~=": lambda c: c >= 0,
    }
    for clause in filter(None, spec.split(",")):
        m = re.match(r"^(>=|<=|==|!=|~=|>|<)(.+)$", clause)
        if not m:
            continue
        op, want = m.group(1), m.group(2)
        if op == "==" and want.endswith(".*"):
            prefix = _release(want[:-2])
            if have[: len(prefix)] != prefix:
                return False
            continue
        if not ops[op](_cmp(have, _release(want))):
            return False
    return True


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_package(name: str, spec: str | None, version_of: Callable[[str], str | None] = installed_version) -> Row:
    """One package against its requirements.txt range (``spec`` None: requirements.txt gave none)."""
    version = version_of(name)
    need = f'"{name}{spec}"' if spec else name
    if version is None:
        if name == "nox" and shutil.which("nox"):
            return Row("Packages", name, "pass", "not in this environment, but `nox` is on PATH (e.g. pipx)")
        return Row("Packages", name, "fail", "not installed", f"python -m pip install {need}")
    if spec and not version_satisfies(version, spec):
        return Row("Packages", name, "fail", f"{version} installed; the course needs {spec}",
                   f"python -m pip install --upgrade {need}")
    return Row("Packages", name, "pass", f"{version}" + (f" (needs {spec})" if spec else ""))


def check_packages(ctx: Context) -> list[Row]:
    rows = []
    if ctx.requirements_error:
        rows.append(Row("Packages", "requirements.txt", "warn", ctx.requirements_error,
                        "restore it with `git checkout -- requirements.txt`; versions below are not range-checked"))
    else:
        rows.append(Row("Packages", "requirements.txt", "pass", f"{len(ctx.requirements)} requirements read"))
    for name in PACKAGES:
        rows.append(check_package(name, ctx.requirements.get(canonical(name)) if ctx.requirements else None))
    return rows


# ---------------------------------------------------------------- Python and the torch build


def check_python(version_info: tuple[int, ...] = tuple(sys.version_info[:3])) -> Row:
    shown = ".".join(map(str, version_info))
    if tuple(version_info[:2]) < MIN_PYTHON:
        return Row("Python", "Python version", "fail", f"{shown} ({sys.executable})",
                   f"the course needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+; create a venv with a newer Python")
    return Row("Python", "Python version", "pass", f"{shown} ({sys.executable})")


def nvidia_gpu_visible() -> bool:
    """Is there an NVIDIA GPU and driver on this machine, whatever torch thinks? (nvidia-smi or the kernel module)"""
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia").exists()


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA the NVIDIA driver supports, from ``nvidia-smi``'s banner ("CUDA Version: 12.4")."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=15).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def cuda_wheel_index(driver: tuple[int, int] | None) -> str | None:
    """The download.pytorch.org index for the newest CUDA wheel this driver can run (cu128 when unknown);
    None when the driver is older than every published CUDA wheel needs."""
    tag = "cu128"
    if driver is not None:
        found = next((t for need, t in CUDA_WHEELS if driver >= need), None)
        if found is None:
            return None
        tag = found
    return f"{WHEEL_INDEX}/{tag}"


def pip_fix_for_cuda(driver: tuple[int, int] | None) -> str:
    index = cuda_wheel_index(driver)
    if index is None:
        assert driver is not None
        need = ".".join(map(str, CUDA_WHEELS[-1][0]))
        return (f"your NVIDIA driver supports CUDA {driver[0]}.{driver[1]}; current torch wheels need {need}+:"
                f" update the driver, then python -m pip install --force-reinstall torch --index-url"
                f" {WHEEL_INDEX}/{CUDA_WHEELS[-1][1]}  (see {INSTALL_DOCS})")
    return f"python -m pip install --force-reinstall torch --index-url {index}  (see {INSTALL_DOCS})"


def install_command(system: str | None = None, machine: str | None = None, nvidia: bool | None = None,
                    driver: tuple[int, int] | None = None) -> str:  # fmt: skip
    """The exact command that installs the right torch build on this machine (README "Install PyTorch").

    Linux / Windows with an NVIDIA GPU: the newest CUDA index the driver runs. Linux without one: the
    CPU-only index (PyPI's default Linux wheel is the multi-GB CUDA build). Windows without one and
    Apple silicon: the default wheel. Intel macOS: no torch >= 2.4 wheels exist, so there is no command.
    """
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    if nvidia is None:
        nvidia = nvidia_gpu_visible()
        driver = driver or (driver_cuda_version() if nvidia else None)
    if system == "Darwin":
        if machine in ("x86_64", "amd64", "i386"):
            return ("none: torch >= 2.4 has no Intel-macOS wheels. Use Linux (a VM, Docker or a cloud notebook)"
                    f" with the CPU-only build, or an Apple-silicon Mac  (see {INSTALL_DOCS})")
        return "python -m pip install torch"
    if nvidia:
        index = cuda_wheel_index(driver)
        if index is None:
            return pip_fix_for_cuda(driver)
        return f"python -m pip install torch --index-url {index}"
    if system == "Windows":
        return "python -m pip install torch"
    return f"python -m pip install torch --index-url {WHEEL_INDEX}/cpu"


def upgrade_torch() -> str:
    """The fix "upgrade torch", as this machine's install command (a bare ``pip install --upgrade torch``
    on Linux would swap a CPU build for PyPI's CUDA one)."""
    cmd = install_command()
    if not cmd.startswith("python -m pip install torch"):
        return f"upgrade torch: {cmd}"
    return "upgrade torch: " + cmd.replace("python -m pip install torch", "python -m pip install --upgrade torch", 1)


def check_torch(ctx: Context) -> list[Row]:
    if ctx.torch is None:
        return [Row("PyTorch", "torch imports", "fail", ctx.torch_error or "not installed",
                    f"{install_command()}  (then python -m pip install -r requirements.txt; see {INSTALL_DOCS})")]
    torch = ctx.torch
    spec = ctx.requirements.get("torch", "")
    ver = torch.__version__
    rows = []
    if spec and not version_satisfies(ver, spec):
        rows.append(Row("PyTorch", "torch version", "fail", f"{ver}; the course needs {spec}", upgrade_torch()))
    else:
        rows.append(Row("PyTorch", "torch version", "pass", ver + (f" (needs {spec})" if spec else "")))
    rows.append(torch_build_row(torch, nvidia_gpu_visible()))
    rows.append(Row("PyTorch", "build for this machine", "pass", install_command()))
    return rows


def torch_build_row(torch: Any, nvidia_visible: bool) -> Row:
    """Which build of torch this is, and whether it fits the hardware."""
    cuda = getattr(torch.version, "cuda", None)
    hip = getattr(torch.version, "hip", None)
    mps_built = bool(getattr(getattr(torch.backends, "mps", None), "is_built", lambda: False)())
    if hip:
        return Row("PyTorch", "torch build", "pass", f"ROCm {hip} build (AMD GPUs appear as 'cuda' devices)")
    if cuda:
        if nvidia_visible or torch.cuda.is_available():
            return Row("PyTorch", "torch build", "pass", f"CUDA {cuda} build")
        return Row("PyTorch", "torch build", "pass", f"CUDA {cuda} build, no NVIDIA driver seen (fine: runs on CPU)")
    if nvidia_visible:
        return Row("PyTorch", "torch build", "warn", "CPU-only build, but an NVIDIA GPU is visible: it will not be used",
                   pip_fix_for_cuda(driver_cuda_version()))
    kind = "CPU + MPS (macOS) build" if mps_built else "CPU-only build"
    return Row("PyTorch", "torch build", "pass", f"{kind}; no NVIDIA GPU seen")


# ---------------------------------------------------------------- CUDA, cuDNN, MPS


def _cuda_absent_detail(torch: Any) -> str:
    if torch.version.cuda is None and not getattr(torch.version, "hip", None):
        return "CPU-only PyTorch build" + (" (an NVIDIA GPU is visible: see 'torch build')" if nvidia_gpu_visible() else "")
    return f"CUDA {torch.version.cuda} build, but no usable GPU (driver missing or CUDA_VISIBLE_DEVICES empty?)"


def _sync(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device == "mps":
        torch.mps.synchronize()


def run_matmul(torch: Any, device: str, dtype: Any = None, n: int = 128) -> tuple[bool, str]:
    """A real matmul on ``device`` compared with float64 on the CPU; (ok, detail)."""
    dtype = dtype or torch.float32
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g, dtype=torch.float64), torch.randn(n, n, generator=g, dtype=torch.float64)
    expected = a @ b
    got = (a.to(device=device, dtype=dtype) @ b.to(device=device, dtype=dtype))
    _sync(torch, device)
    err = float((got.double().cpu() - expected).abs().max() / expected.abs().max())
    tol = {torch.float16: 5e-3, torch.bfloat16: 3e-2}.get(dtype, 1e-2)  # float32 allows TF32
    return err < tol, f"max relative error {err:.1e}"


def check_cuda(ctx: Context) -> list[Row]:
    torch = ctx.torch
    if not torch.cuda.is_available():
        return [Row("CUDA", "CUDA devices", "absent", _cuda_absent_detail(torch))]
    rows = []
    for i in range(torch.cuda.device_count()):
        dev = f"cuda:{i}"
        props = torch.cuda.get_device_properties(i)
        cap = torch.cuda.get_device_capability(i)
        with torch.cuda.device(i):
            bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        detail = (f"{props.name}, compute capability {cap[0]}.{cap[1]}, {props.total_memory / 2**30:.1f} GiB,"
                  f" bf16 {'in hardware' if bf16 else 'emulated only (use fp16 autocast)'}")
        rows.append(Row("CUDA", f"{dev} device", "pass", detail))
        ok, info = run_matmul(torch, dev)
        rows.append(Row("CUDA", f"{dev} kernel run", "pass" if ok else "fail", f"128x128 matmul: {info}",
                        "" if ok else "the GPU computes wrong results: update the driver, check `nvidia-smi`"))
    return rows


def check_tf32(ctx: Context) -> list[Row]:
    """TF32: whether float32 matmuls and convolutions on CUDA may round their inputs to 10 mantissa bits."""
    torch = ctx.torch
    if not torch.cuda.is_available():
        return [Row("CUDA", "TF32", "absent", "no CUDA device")]
    matmul = torch.backends.cuda.matmul.allow_tf32
    cudnn = torch.backends.cudnn.allow_tf32
    prec = torch.get_float32_matmul_precision()
    ampere = any(torch.cuda.get_device_capability(i)[0] >= 8 for i in range(torch.cuda.device_count()))
    detail = f"float32_matmul_precision={prec!r} (matmul allow_tf32={matmul}), cudnn allow_tf32={cudnn}"
    if not ampere:
        detail += "; this GPU has no TF32 (before compute capability 8.0): float32 is exact"
    elif not matmul:
        detail += "; matmuls exact float32 (torch.set_float32_matmul_precision('high') trades 13 mantissa bits for speed)"
    else:
        detail += "; float32 matmuls run in TF32: ~1e-3 relative error, compare with a float32 tolerance that allows it"
    return [Row("CUDA", "TF32", "pass", detail)]


def check_cudnn(ctx: Context) -> list[Row]:
    torch = ctx.torch
    if not torch.cuda.is_available():
        return [Row("CUDA", "cuDNN", "absent", "no CUDA device")]
    if not torch.backends.cudnn.is_available():
        return [Row("CUDA", "cuDNN", "warn", "cuDNN not available in this build (convolutions will be slow)",
                    pip_fix_for_cuda(driver_cuda_version()))]
    x = torch.randn(2, 3, 16, 16)
    w = torch.randn(4, 3, 3, 3)
    expected = torch.nn.functional.conv2d(x.double(), w.double())
    got = torch.nn.functional.conv2d(x.cuda(), w.cuda())
    _sync(torch, "cuda")
    err = float((got.double().cpu() - expected).abs().max() / expected.abs().max())
    ok = err < 1e-2
    return [Row("CUDA", "cuDNN", "pass" if ok else "fail",
                f"version {torch.backends.cudnn.version()}, conv2d max relative error {err:.1e}",
                "" if ok else "cuDNN gives wrong results: reinstall torch")]


def check_mps(ctx: Context) -> list[Row]:
    torch = ctx.torch
    mps = getattr(torch.backends, "mps", None)
    mac = platform.mac_ver()[0]
    if sys.platform != "darwin":
        return [Row("MPS", "Apple MPS", "absent", "not macOS (MPS is Apple silicon only)")]
    built = bool(mps is not None and mps.is_built())
    if not built:
        return [Row("MPS", "Apple MPS", "warn", f"macOS {mac}, but this torch build has no MPS",
                    "python -m pip install --force-reinstall torch  (the standard macOS arm64 wheel has MPS; a Python"
                    " running under Rosetta gets Intel wheels: use an arm64 Python)")]
    if not mps.is_available():
        return [Row("MPS", "Apple MPS", "absent", f"macOS {mac} {platform.machine()}: built with MPS, but no usable"
                                                  " device (Intel Mac, or macOS too old)")]
    rows = [Row("MPS", "Apple MPS", "pass", f"macOS {mac} {platform.machine()}, built and available")]
    ok, info = run_matmul(torch, "mps")
    rows.append(Row("MPS", "mps kernel run", "pass" if ok else "fail", f"128x128 matmul: {info}",
                    "" if ok else "MPS computes wrong results: update macOS and torch"))
    return rows


# ---------------------------------------------------------------- autocast, GradScaler, SDPA, profiler, compile


def available_devices(torch: Any) -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def autocast_cases(torch: Any) -> list[tuple[str, Any, bool]]:
    """(device, dtype, needed by a stage) for every autocast cell the course uses."""
    return [
        ("cpu", torch.bfloat16, True), ("cpu", torch.float16, True),
        ("cuda", torch.float16, True), ("cuda", torch.bfloat16, True),
        ("mps", torch.float16, True), ("mps", torch.bfloat16, False),
    ]


def run_autocast(torch: Any, device: str, dtype: Any) -> tuple[bool, str]:
    """A matmul under autocast: the result must come out in ``dtype`` and match float64 to that dtype's precision."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 64, generator=g), torch.randn(64, 64, generator=g)
    with torch.autocast(device_type=device, dtype=dtype):
        out = a.to(device) @ b.to(device)
    _sync(torch, device)
    expected = a.double() @ b.double()
    err = float((out.double().cpu() - expected).abs().max() / expected.abs().max())
    tol = 3e-2 if dtype == torch.bfloat16 else 5e-3
    if out.dtype != dtype:
        return False, f"result came out {out.dtype} (autocast silently off)"
    return err < tol, f"matmul in {str(dtype).replace('torch.', '')}, max relative error {err:.1e}"


def check_autocast(ctx: Context) -> list[Row]:
    torch = ctx.torch
    devices = available_devices(torch)
    rows = []
    for device, dtype, needed in autocast_cases(torch):
        name = f"autocast {device} {str(dtype).replace('torch.', '')}"
        if device not in devices:
            rows.append(Row("Autocast", name, "absent", f"no {device.upper()} device"))
            continue
        if device == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported(including_emulation=False):
            rows.append(Row("Autocast", name, "absent", "this GPU has no bf16 in hardware (use fp16)"))
            continue
        if device == "mps" and dtype == torch.bfloat16 and not torch.backends.mps.is_macos_or_newer(14, 0):
            rows.append(Row("Autocast", name, "absent", "bf16 on MPS needs macOS 14+"))
            continue
        rows.append(_guarded("Autocast", name, lambda d=device, t=dtype, n=needed: _autocast_row(torch, d, t, n)))
    return rows


def _autocast_row(torch: Any, device: str, dtype: Any, needed: bool) -> Row:
    name = f"autocast {device} {str(dtype).replace('torch.', '')}"
    ok, info = run_autocast(torch, device, dtype)
    if ok:
        return Row("Autocast", name, "pass", info)
    return Row("Autocast", name, "fail" if needed else "warn", info,
               upgrade_torch())


def run_scaler_step(torch: Any, device: str) -> tuple[bool, str]:
    """One fp16 training step of a tiny linear model with an enabled GradScaler."""
    nn = torch.nn
    g = torch.Generator().manual_seed(0)
    model = nn.Linear(8, 1).to(device)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(16, 8, generator=g).to(device), torch.randn(16, 1, generator=g).to(device)
    scaler = torch.amp.GradScaler(device, init_scale=1024.0)
    if not scaler.is_enabled():
        return False, "GradScaler disabled itself"
    with torch.autocast(device_type=device, dtype=torch.float16):
        loss = nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    opt = _TinySGD(model.parameters(), lr=0.1)
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(opt)
    scaler.update()
    _sync(torch, device)
    moved = any(not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters(), strict=True))
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    return moved and finite, f"fp16 step: loss {loss.item():.3f}, scale {scaler.get_scale():g}, parameters updated"


class _TinySGD:
    """Plain SGD with the interface GradScaler uses (torch.optim's first use imports torch.compile: ~3 s)."""

    def __init__(self, params: Iterable[Any], lr: float) -> None:
        self.param_groups: list[dict[str, Any]] = [{"params": list(params), "lr": lr}]

    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.data.add_(p.grad, alpha=-group["lr"])


def check_grad_scaler(ctx: Context) -> list[Row]:
    torch = ctx.torch
    devices = available_devices(torch)
    rows = []
    for device in ("cpu", "cuda", "mps"):
        name = f"GradScaler step {device}"
        if device not in devices:
            rows.append(Row("GradScaler", name, "absent", f"no {device.upper()} device"))
            continue

        def row(d: str = device, n: str = name) -> Row:
            ok, info = run_scaler_step(torch, d)
            return Row("GradScaler", n, "pass" if ok else "fail", info,
                       "" if ok else upgrade_torch())

        rows.append(_guarded("GradScaler", name, row))
    return rows


SDPA_BACKENDS = ("MATH", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")


def run_sdpa(torch: Any, device: str, backend_name: str) -> tuple[str, str]:
    """Try one SDPA backend; ("pass" | "fail" | "absent", detail)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name, None)
    if backend is None:
        return "absent", "not in this torch version"
    dtype = torch.float32 if device == "cpu" else torch.float16
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 16, 64, generator=g) for _ in range(3))  # (B, nh, T, hs)
    scores = (q.double() @ k.double().transpose(-2, -1)) / 8.0  # (B, nh, T, T)
    expected = scores.softmax(-1) @ v.double()  # (B, nh, T, hs)
    try:
        with sdpa_kernel(backend):
            out = torch.nn.functional.scaled_dot_product_attention(
                q.to(device, dtype), k.to(device, dtype), v.to(device, dtype))
        _sync(torch, device)
    except RuntimeError as exc:
        reason = str(exc).strip().split(".")[0].splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
        return "absent", f"does not run on {device} {str(dtype).replace('torch.', '')} ({reason})"
    err = float((out.double().cpu() - expected).abs().max())
    ok = err < (1e-4 if dtype == torch.float32 else 1e-2)
    return ("pass" if ok else "fail"), f"{str(dtype).replace('torch.', '')}, max error {err:.1e}"


def check_sdpa(ctx: Context) -> list[Row]:
    torch = ctx.torch
    devices = available_devices(torch)
    rows = []
    for device in ("cpu", "cuda", "mps"):
        for backend in SDPA_BACKENDS:
            name = f"SDPA {device} {backend.lower()}"
            if device not in devices:
                rows.append(Row("Attention", name, "absent", f"no {device.upper()} device"))
                continue

            def row(d: str = device, b: str = backend, n: str = name) -> Row:
                status, info = run_sdpa(torch, d, b)
                if status == "fail" or (status == "absent" and b == "MATH"):  # math must run everywhere
                    return Row("Attention", n, "fail", info, upgrade_torch())
                return Row("Attention", n, status, info)

            rows.append(_guarded("Attention", name, row))
    return rows


def _fast_profiler(torch: Any) -> None:
    """Keep torch.profiler from importing torch._inductor (~1 s) just to read a CUDA-graphs flag."""
    import builtins

    try:
        import torch.profiler.profiler as pp
    except ImportError:
        return
    if "torch._inductor" not in sys.modules and not hasattr(pp, "hasattr"):
        pp.hasattr = lambda obj, name: False if (obj is torch and name == "_inductor") else builtins.hasattr(obj, name)


class _Captured:
    text: str = ""


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[_Captured]:
    """Redirect file descriptor 2 (what C++ code writes to, below Python's sys.stderr) to a temporary
    file for the duration; the captured text is kept, not printed. Falls back to doing nothing when
    fd 2 cannot be duplicated (an embedded interpreter)."""
    captured = _Captured()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield captured
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", "replace")


def check_profiler(ctx: Context) -> list[Row]:
    torch = ctx.torch
    from torch.profiler import ProfilerActivity, profile

    _fast_profiler(torch)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    a = torch.randn(64, 64, device=device)
    with native_stderr_captured() as noise:  # the profiler's native code logs to fd 2 (USDT:... profiler_start)
        with profile(activities=activities) as prof:
            (a @ a).relu()
            _sync(torch, device)
        names = {e.key for e in prof.key_averages()}
    if not names and noise.text.strip():
        names_detail = f"; the profiler said: {noise.text.strip().splitlines()[-1][:120]}"
    else:
        names_detail = ""
    ok = bool(names & {"aten::mm", "aten::matmul"})
    return [Row("Profiler", f"torch.profiler ({device})", "pass" if ok else "fail",
                f"{len(names)} operators recorded" + ("" if ok else "; aten::mm missing" + names_detail),
                "" if ok else upgrade_torch())]


def check_compile(ctx: Context) -> list[Row]:
    if not ctx.run_compile:
        return [Row("Compile", "torch.compile", "absent", "not run: add --compile (slow; needs a C++ compiler)")]
    torch = ctx.torch

    def f(x: Any) -> Any:
        return torch.nn.functional.gelu(x) * 2 + 1

    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(32, 32, device=device)
    try:
        got = torch.compile(f)(x)
        _sync(torch, device)
    except Exception as exc:  # compile failing is common (no compiler, Windows): no stage needs it
        return [Row("Compile", "torch.compile", "warn", one_line(exc),
                    "install a C++ compiler (gcc / clang / MSVC build tools); no graded stage needs torch.compile")]
    ok = bool(torch.allclose(got, f(x), atol=1e-5))
    return [Row("Compile", f"torch.compile ({device})", "pass" if ok else "warn",
                "compiled and matched eager" if ok else "compiled result differs from eager")]


# ---------------------------------------------------------------- running the checks


def _guarded(section: str, name: str, fn: Callable[[], Row | list[Row]]) -> Any:
    """Run one check; an exception becomes a fail row instead of a traceback."""
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:
        result = Row(section, name, "fail", f"the check crashed: {one_line(exc)}",
                     "run `python -m torch.utils.collect_env` and compare with the lesson of stage 0.2")
    seconds = round(time.perf_counter() - start, 4)
    rows = result if isinstance(result, list) else [result]
    if len(rows) == 1 and not rows[0].seconds:
        rows[0].seconds = seconds
    return result


CHECKS: tuple[tuple[str, str, Callable[[Context], list[Row]], bool], ...] = (
    # (section, name for a crash row, check, needs torch)
    ("CUDA", "CUDA", check_cuda, True),
    ("CUDA", "cuDNN", check_cudnn, True),
    ("CUDA", "TF32", check_tf32, True),
    ("MPS", "Apple MPS", check_mps, True),
    ("Autocast", "autocast", check_autocast, True),
    ("GradScaler", "GradScaler", check_grad_scaler, True),
    ("Attention", "scaled_dot_product_attention", check_sdpa, True),
    ("Profiler", "torch.profiler", check_profiler, True),
    ("Compile", "torch.compile", check_compile, True),
    ("Packages", "packages", check_packages, False),
)


def load_context(run_compile: bool, requirements: Path = REQUIREMENTS) -> Context:
    ctx = Context(run_compile=run_compile)
    try:
        ctx.requirements = parse_requirements(requirements.read_text(encoding="utf-8"))
    except FileNotFoundError:
        ctx.requirements_error = f"{requirements} is missing"
    except (OSError, UnicodeDecodeError) as exc:
        ctx.requirements_error = f"{requirements} unreadable: {one_line(exc)}"
    try:
        ctx.torch = importlib.import_module("torch")
    except Exception as exc:  # ImportError, or a broken install raising OSError on a missing DLL
        ctx.torch_error = f"import torch failed: {one_line(exc)}"
    return ctx


def run_checks(ctx: Context) -> list[Row]:
    rows: list[Row] = [_guarded("Python", "Python version", check_python)]
    rows += _as_list(_guarded("PyTorch", "torch", lambda: check_torch(ctx)))
    for section, name, fn, needs_torch in CHECKS:
        if needs_torch and ctx.torch is None:
            continue
        rows += _as_list(_guarded(section, name, lambda f=fn: f(ctx)))
    return rows


def _as_list(x: Row | list[Row]) -> list[Row]:
    return x if isinstance(x, list) else [x]


def exit_code(rows: Iterable[Row]) -> int:
    return 1 if any(r.status == "fail" for r in rows) else 0


def report(rows: list[Row], torch_version: str | None) -> dict[str, Any]:
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch_version,
        "exit_code": exit_code(rows),
        "counts": counts,
        "rows": [asdict(r) for r in rows],
    }


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and os.replace: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- output

STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "absent": "dim"}
#: Each backend's device row: when it is absent, every absent row of that backend folds into one line.
BACKEND_ROWS: dict[str, str] = {"CUDA": "CUDA devices", "MPS": "Apple MPS"}


def backend_of(row: Row) -> str | None:
    """Which device backend a row checks: "CUDA" (cuDNN and TF32 too), "MPS", or None (CPU, packages, ...)."""
    words = row.check.lower().split()
    if row.section == "CUDA" or "cuda" in words or any(w.startswith("cuda:") for w in words):
        return "CUDA"
    if row.section == "MPS" or "mps" in words:
        return "MPS"
    return None


def displayed_rows(rows: list[Row], verbose: bool = False) -> list[Row]:
    """The rows to print: every row with ``verbose``; otherwise the absent rows of a backend with no device
    become one row in its place ("CUDA: no device (...) — 10 checks not run")."""
    if verbose:
        return list(rows)
    absent = {b for b, name in BACKEND_ROWS.items() if any(r.check == name and r.status == "absent" for r in rows)}
    folded = {b: [r for r in rows if r.status == "absent" and backend_of(r) == b] for b in absent}
    out: list[Row] = []
    for r in rows:
        b = backend_of(r)
        if b not in absent or r.status != "absent":
            out.append(r)
        elif r.check == BACKEND_ROWS[b]:
            n = len(folded[b])
            out.append(Row(r.section, b, "absent", f"no device: {r.detail} — {n} checks not run (--verbose lists them)"))
    return out


def render_plain(rows: list[Row]) -> str:
    width = max(len(r.check) for r in rows)
    lines = []
    section = None
    for r in rows:
        if r.section != section:
            section = r.section
            lines.append(f"[{section}]")
        lines.append(f"  {r.status:<6}  {r.check:<{width}}  {r.detail}")
        if r.fix:
            lines.append(f"  {'':<6}  {'':<{width}}  fix: {r.fix}")
    return "\n".join(lines)


def summary_line(rows: list[Row]) -> str:
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    verdict = "something a stage needs is broken: see the fail rows" if exit_code(rows) else "ready for the course"
    return f"{counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail, {counts['absent']} absent — {verdict}"


def render_rich(rows: list[Row], rich: ModuleType, verbose: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="llm-from-scratch doctor", show_lines=False)
    for col in ("section", "check", "status", "detail / fix"):
        table.add_column(col, overflow="fold")
    for r in displayed_rows(rows, verbose):
        text = r.detail + (f"\n[bold]fix:[/bold] {r.fix}" if r.fix else "")
        table.add_row(r.section, r.check, f"[{STYLE[r.status]}]{r.status}[/]", text)
    console = Console()
    console.print(table)
    console.print(summary_line(rows))


def print_report(rows: list[Row], verbose: bool = False) -> None:
    if sys.stdout.isatty():
        try:
            import rich

            render_rich(rows, rich, verbose)
            return
        except ImportError:
            pass
    print(render_plain(displayed_rows(rows, verbose)))
    print(summary_line(rows))


# ---------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        """Bad flags: one line, exit status 2."""
        sys.stderr.write(f"doctor: {message} (usage: python -m grader.doctor [--json PATH] [--compile] [--verbose])\n")
        raise SystemExit(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="python -m grader.doctor", description="Check that this Python environment is ready for the course.")
    p.add_argument("--json", metavar="PATH", type=Path, help="also write the report as JSON to PATH (atomically)")
    p.add_argument("--compile", action="store_true", help="also try torch.compile (slow)")
    p.add_argument("--verbose", "-v", action="store_true", help="one row per check, absent devices' checks too")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = load_context(args.compile)
    rows = run_checks(ctx)
    print_report(rows, args.verbose)
    if args.json is not None:
        try:
            write_json_atomic(args.json, report(rows, getattr(ctx.torch, "__version__", None)))
        except OSError as exc:
            sys.stderr.write(f"doctor: cannot write {args.json}: {one_line(exc)}\n")
            return 2
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
