"""The device / precision matrix every tensor stage is checked on (DESIGN §6).

A ``Setting`` is one cell: a device and, optionally, an autocast dtype. Tests take
the ``setting`` fixture (see ``shared.pytest_plugin``), which is parametrized over
``SETTINGS`` and skips absent devices with a clear reason ("no CUDA device").

    def test_matches_reference_everywhere(impl, setting):
        x = setting.tensor(torch.randn(2, 5, 16))
        with setting.autocast():
            y = impl.f(x)
        check_close(y, reference(x), what="...", **setting.tol)
"""

from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Setting:
    device: str  # "cpu" | "cuda" | "mps"
    amp: str | None  # None: plain float32; "bfloat16" | "float16": run under torch.autocast

    @property
    def id(self) -> str:
        short = {None: "fp32", "bfloat16": "bf16", "float16": "fp16"}[self.amp]
        return f"{self.device}-{short}"

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return None if self.amp is None else getattr(torch, self.amp)

    def skip_reason(self) -> str | None:
        """Why this cell cannot run here, or None when it can."""
        if self.device == "cuda":
            if not torch.cuda.is_available():
                return "no CUDA device"
            if self.amp == "bfloat16" and not torch.cuda.is_bf16_supported():
                return f"{torch.cuda.get_device_name(0)} has no bfloat16 support"
        if self.device == "mps":
            mps = getattr(torch.backends, "mps", None)
            if mps is None or not mps.is_available():
                return "no Apple MPS device" if platform.system() == "Darwin" else "no MPS device (Apple silicon only)"
        return None

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` moved to this setting's device (inputs stay float32; autocast picks the compute dtype)."""
        return x.to(self.torch_device)

    def module(self, m: torch.nn.Module) -> torch.nn.Module:
        return m.to(self.torch_device)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=self.amp_dtype)

    def sync(self) -> None:
        """Wait for queued kernels, so timings and error checks see finished work."""
        if self.device == "cuda":
            torch.cuda.synchronize()
        elif self.device == "mps":
            torch.mps.synchronize()

    @property
    def tol(self) -> dict[str, float]:
        """``atol``/``rtol`` fitting the compute dtype, for ``check_close(**setting.tol)``."""
        if self.amp == "bfloat16":  # 8 bits of mantissa: about 2-3 significant digits
            return {"atol": 4e-2, "rtol": 4e-2}
        if self.amp == "float16":  # 11 bits of mantissa
            return {"atol": 1e-2, "rtol": 1e-2}
        if self.device == "cpu":
            return {"atol": 1e-5, "rtol": 1e-4}
        return {"atol": 1e-4, "rtol": 1e-3}  # GPU kernels reorder sums


SETTINGS: tuple[Setting, ...] = (
    Setting("cpu", None),
    Setting("cpu", "bfloat16"),
    Setting("cuda", None),
    Setting("cuda", "float16"),
    Setting("cuda", "bfloat16"),
    Setting("mps", None),
    Setting("mps", "float16"),
)


def environment_summary() -> dict[str, Any]:
    """Devices present and the autocast dtypes each supports: the grader's one-line summary."""
    devices: dict[str, list[str]] = {"cpu": ["bfloat16"]}
    if torch.cuda.is_available():
        devices["cuda"] = ["float16"] + (["bfloat16"] if torch.cuda.is_bf16_supported() else [])
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices["mps"] = ["float16"]
    return {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "devices": devices,
        "cuda_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
