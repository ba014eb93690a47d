"""Stage 0.2's reference solution on every machine the course supports, pretended on this one.

``pick_device`` and ``autocast_dtype`` decide from torch's availability functions; here they
are monkeypatched, so the CUDA and MPS branches of the *solution* run on a CPU-only CI box.
(The graded tests do the same for the learner's file; this pins the reference itself.)
"""

from __future__ import annotations

import importlib.util
import warnings
from types import ModuleType

import pytest
import torch

from shared.registry import BY_ID


@pytest.fixture(scope="module")
def sol() -> ModuleType:
    path = BY_ID["0.2"].module_path("solution")
    spec = importlib.util.spec_from_file_location("llmfs_course_test_0_2_solution", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pretend(
    monkeypatch: pytest.MonkeyPatch, *, cuda: bool = False, mps: bool = False, native_bf16: bool = True,
    macos: tuple[int, int] = (15, 0),
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if cuda else 0)  # a pretend machine with cuda:0 and cuda:1
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: cuda and (
        native_bf16 or including_emulation))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: macos >= (major, minor))


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(False, False, "cpu"), (True, False, "cuda"), (False, True, "mps"), (True, True, "cuda")],
)
def test_auto_choice(sol: ModuleType, monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: str) -> None:
    pretend(monkeypatch, cuda=cuda, mps=mps)
    assert sol.pick_device() == torch.device(expected)
    assert sol.pick_device("auto") == torch.device(expected)


def test_explicit_choices(sol: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    pretend(monkeypatch, cuda=True, mps=True)
    assert sol.pick_device("cpu") == torch.device("cpu")
    assert sol.pick_device("CUDA") == torch.device("cuda")
    assert sol.pick_device("cuda:1") == torch.device("cuda", 1)
    assert sol.pick_device("mps") == torch.device("mps")
    with pytest.raises(RuntimeError, match="cuda:2"):  # two pretend devices: cuda:0 and cuda:1 only
        sol.pick_device("cuda:2")


@pytest.mark.parametrize(("name", "words"), [("cuda", ("cuda", "pip install")), ("mps", ("mps", "macos"))])
def test_absent_device_message(sol: ModuleType, monkeypatch: pytest.MonkeyPatch, name: str, words: tuple[str, ...]) -> None:
    pretend(monkeypatch)
    with pytest.raises(RuntimeError) as info:
        sol.pick_device(name)
    assert all(w in str(info.value).lower() for w in words), str(info.value)


@pytest.mark.parametrize("name", ["gpu", "tpu", "", "xla"])
def test_unknown_name(sol: ModuleType, name: str) -> None:
    with pytest.raises(ValueError):
        sol.pick_device(name)


@pytest.mark.parametrize(
    ("device", "cuda", "mps", "native_bf16", "macos", "expected"),
    [
        ("cpu", False, False, True, (15, 0), torch.bfloat16),
        ("cuda", True, False, True, (15, 0), torch.bfloat16),  # A100, H100, RTX 30xx+
        ("cuda:0", True, False, False, (15, 0), torch.float16),  # T4, V100: bf16 only emulated
        ("mps", False, True, True, (14, 0), torch.bfloat16),
        ("mps", False, True, True, (13, 6), torch.float16),
    ],
)
def test_dtype_table(
    sol: ModuleType, monkeypatch: pytest.MonkeyPatch, device: str, cuda: bool, mps: bool, native_bf16: bool,
    macos: tuple[int, int], expected: torch.dtype,
) -> None:
    pretend(monkeypatch, cuda=cuda, mps=mps, native_bf16=native_bf16, macos=macos)
    assert sol.autocast_dtype(device) == expected
    assert sol.autocast_dtype(torch.device(device)) == expected


def test_dtype_unknown_device(sol: ModuleType) -> None:
    with pytest.raises(ValueError):
        sol.autocast_dtype("meta")


@pytest.mark.parametrize(
    ("device", "dtype", "enabled"),
    [("cpu", torch.bfloat16, False), ("cpu", torch.float16, True), ("cuda", torch.float16, True),
     ("cuda", torch.bfloat16, False), ("mps", torch.float16, True), ("cuda", torch.float32, False)],
)
def test_grad_scaler(sol: ModuleType, monkeypatch: pytest.MonkeyPatch, device: str, dtype: torch.dtype, enabled: bool) -> None:
    pretend(monkeypatch, cuda=True, mps=True)
    s = sol.make_grad_scaler(device, dtype)
    assert isinstance(s, torch.amp.GradScaler) and s.is_enabled() is enabled


def test_cuda_scaler_disables_itself_without_cuda(sol: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented behaviour the graded check works around: no CUDA -> GradScaler('cuda') warns and disables."""
    pretend(monkeypatch, cuda=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = sol.make_grad_scaler("cuda", torch.float16)
    assert not s.is_enabled()
    assert any("CUDA is not available" in str(w.message) for w in caught)
