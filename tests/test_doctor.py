"""The environment doctor (``python -m grader.doctor``): a real run here, and its branch logic.

The real run happens once (module-scoped fixture, a child process, like ``nox -s doctor``).
The branches a CPU-only CI machine cannot reach — a CPU build next to an NVIDIA GPU, a
missing package, a version out of range — are unit-tested with monkeypatching.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from grader import doctor
from shared.registry import ROOT

ROW_KEYS = {"section", "check", "status", "detail", "fix", "seconds"}
TOP_KEYS = {"schema", "created", "python", "platform", "torch", "exit_code", "counts", "rows"}
#: Rows that must pass on any machine the course supports, CPU-only included.
CPU_ROWS = {
    "Python version", "torch version", "torch build", "autocast cpu bfloat16", "autocast cpu float16",
    "GradScaler step cpu", "SDPA cpu math", "torch.profiler (cpu)",
    "numpy", "pytest", "pytest-timeout", "nox", "rich",
}


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "grader.doctor", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path_factory.mktemp("doctor") / "sub" / "report.json"
    proc = _run("--json", str(out))
    assert out.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc, json.loads(out.read_text(encoding="utf-8"))


def test_runs_here_and_exits_0(real_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    proc, data = real_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert data["exit_code"] == 0


def test_json_has_the_documented_structure(real_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    _, data = real_run
    assert set(data) == TOP_KEYS
    assert data["schema"] == doctor.SCHEMA
    assert data["rows"], "no rows"
    for row in data["rows"]:
        assert set(row) == ROW_KEYS, row
        assert row["status"] in doctor.STATUSES, row
    assert data["counts"] == {s: sum(r["status"] == s for r in data["rows"]) for s in doctor.STATUSES}


def test_cpu_rows_pass_and_absent_devices_say_absent(
    real_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    import torch

    _, data = real_run
    by_name = {r["check"]: r for r in data["rows"]}
    missing = CPU_ROWS - set(by_name)
    assert not missing, f"rows missing: {missing}"
    not_passing = {n: by_name[n] for n in CPU_ROWS if by_name[n]["status"] != "pass"}
    if not (ROOT / "requirements.txt").exists():  # ranges cannot be checked, presence still can
        assert by_name["requirements.txt"]["status"] == "warn"
    else:
        assert by_name["requirements.txt"]["status"] == "pass"
    assert not not_passing, not_passing
    assert not [r for r in data["rows"] if r["status"] == "fail"]
    if not torch.cuda.is_available():
        cuda_rows = [r for r in data["rows"] if r["section"] == "CUDA" or " cuda" in r["check"]]
        assert cuda_rows and all(r["status"] == "absent" for r in cuda_rows), cuda_rows
    if not torch.backends.mps.is_available():
        mps_rows = [r for r in data["rows"] if r["section"] == "MPS" or " mps" in r["check"]]
        assert mps_rows and all(r["status"] == "absent" for r in mps_rows), mps_rows
    assert by_name["torch.compile"]["status"] == "absent"  # only with --compile


def test_plain_text_when_not_a_terminal(real_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    proc, _ = real_run
    assert "\x1b[" not in proc.stdout  # no colour codes
    assert "[Packages]" in proc.stdout and "ready for the course" in proc.stdout


def test_bad_flag_is_one_line_and_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-c", "from grader.doctor import main; main(['--frobnicate'])"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "--frobnicate" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- branch logic


def _fake_torch(cuda_build: str | None, cuda_available: bool = False, mps_built: bool = False) -> Any:
    return SimpleNamespace(
        version=SimpleNamespace(cuda=cuda_build, hip=None),
        cuda=SimpleNamespace(is_available=lambda: cuda_available),
        backends=SimpleNamespace(mps=SimpleNamespace(is_built=lambda: mps_built)),
    )


def test_cpu_build_with_nvidia_gpu_warns_with_the_pip_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "driver_cuda_version", lambda: (12, 8))
    row = doctor.torch_build_row(_fake_torch(None), nvidia_visible=True)
    assert row.status == "warn"
    assert "CPU-only build" in row.detail and "NVIDIA" in row.detail
    assert "pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu128" in row.fix
    monkeypatch.setattr(doctor, "driver_cuda_version", lambda: (12, 4))  # older than every current CUDA wheel
    old = doctor.torch_build_row(_fake_torch(None), nvidia_visible=True)
    assert "update the driver" in old.fix and "CUDA 12.4" in old.fix


def test_nvidia_visible_via_nvidia_smi_or_proc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(doctor.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    assert doctor.nvidia_gpu_visible()
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    monkeypatch.setattr(doctor, "Path", lambda p: tmp_path / "no-such-dir")
    assert not doctor.nvidia_gpu_visible()


def test_build_rows_without_a_gpu_pass() -> None:
    assert doctor.torch_build_row(_fake_torch(None), nvidia_visible=False).status == "pass"
    assert doctor.torch_build_row(_fake_torch("12.8", cuda_available=True), nvidia_visible=True).status == "pass"
    mac = doctor.torch_build_row(_fake_torch(None, mps_built=True), nvidia_visible=False)
    assert mac.status == "pass" and "MPS" in mac.detail


def test_cuda_wheel_index_follows_the_driver() -> None:
    assert doctor.cuda_wheel_index((12, 9)).endswith("/cu128")
    assert doctor.cuda_wheel_index((12, 6)).endswith("/cu126")
    assert doctor.cuda_wheel_index((13, 1)).endswith("/cu130")
    assert doctor.cuda_wheel_index((11, 8)) is None  # no current torch wheel runs on it: update the driver
    assert doctor.cuda_wheel_index(None).endswith("/cu128")


def test_the_cuda_indexes_are_the_readmes() -> None:
    """One source of truth: every CUDA index the doctor can suggest is in the README's install table, and back."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Install PyTorch"):].split("\n## ", 1)[0]
    import re

    in_readme = set(re.findall(r"/whl/(cu\d+)", table))
    assert in_readme == {tag for _, tag in doctor.CUDA_WHEELS}, in_readme


@pytest.mark.parametrize(
    ("system", "machine", "nvidia", "driver", "expected"),
    [
        ("Linux", "x86_64", False, None, "python -m pip install torch --index-url https://download.pytorch.org/whl/cpu"),
        ("Linux", "x86_64", True, (13, 0), "python -m pip install torch --index-url https://download.pytorch.org/whl/cu130"),
        ("Windows", "AMD64", True, (12, 6), "python -m pip install torch --index-url https://download.pytorch.org/whl/cu126"),
        ("Windows", "AMD64", False, None, "python -m pip install torch"),
        ("Darwin", "arm64", False, None, "python -m pip install torch"),
        ("Darwin", "x86_64", False, None, "none: torch >= 2.4 has no Intel-macOS wheels"),
    ],
)  # fmt: skip
def test_install_command_fits_the_machine(system: str, machine: str, nvidia: bool, driver: Any, expected: str) -> None:
    assert doctor.install_command(system, machine, nvidia, driver).startswith(expected)


def test_missing_torch_gets_this_machines_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "install_command", lambda: "python -m pip install torch --index-url X")
    (row,) = doctor.check_torch(doctor.Context(torch=None, torch_error="import torch failed: No module named 'torch'"))
    assert row.status == "fail" and row.fix.startswith("python -m pip install torch --index-url X")
    assert "requirements.txt" in row.fix and "Install PyTorch" in row.fix


def test_absent_backends_fold_into_one_line_and_verbose_lists_them() -> None:
    rows = [
        doctor.Row("CUDA", "CUDA devices", "absent", "CPU-only PyTorch build"),
        doctor.Row("CUDA", "TF32", "absent", "no CUDA device"),
        doctor.Row("Autocast", "autocast cpu bfloat16", "pass", "ok"),
        doctor.Row("Autocast", "autocast cuda float16", "absent", "no CUDA device"),
        doctor.Row("Attention", "SDPA cpu efficient_attention", "absent", "does not run on cpu"),
        doctor.Row("MPS", "Apple MPS", "pass", "built and available"),
        doctor.Row("Autocast", "autocast mps bfloat16", "absent", "bf16 on MPS needs macOS 14+"),
    ]
    shown = doctor.displayed_rows(rows)
    assert [r.check for r in shown] == ["CUDA", "autocast cpu bfloat16", "SDPA cpu efficient_attention", "Apple MPS",
                                        "autocast mps bfloat16"]  # fmt: skip
    assert shown[0].detail == "no device: CPU-only PyTorch build — 3 checks not run (--verbose lists them)"
    assert doctor.displayed_rows(rows, verbose=True) == rows


def test_native_stderr_is_captured() -> None:
    code = (
        "import os, sys; from grader.doctor import native_stderr_captured\n"
        "with native_stderr_captured() as c:\n    os.write(2, b'USDT: profiler_start\\n')\n"
        "print(repr(c.text)); os.write(2, b'after\\n')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == repr("USDT: profiler_start\n") and proc.stderr == "after\n"


def test_the_real_run_is_quiet_and_folded(real_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    import torch

    proc, data = real_run
    assert "USDT" not in proc.stderr + proc.stdout and "profiler_start" not in proc.stderr + proc.stdout
    assert any(r["check"] == "TF32" for r in data["rows"])
    assert any(r["check"] == "build for this machine" and "pip install torch" in r["detail"] or "none:" in r["detail"]
               for r in data["rows"])  # fmt: skip
    if not torch.cuda.is_available():
        assert "  absent  CUDA " in proc.stdout and "checks not run (--verbose lists them)" in proc.stdout
        assert "autocast cuda float16" not in proc.stdout


def test_missing_package_fails_with_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    row = doctor.check_package("rich", ">=13.0", version_of=lambda name: None)
    assert row.status == "fail" and row.detail == "not installed"
    assert 'pip install "rich>=13.0"' in row.fix


def test_nox_on_path_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor.shutil, "which", lambda name: "/home/me/.local/bin/nox" if name == "nox" else None)
    assert doctor.check_package("nox", ">=2024.4.15", version_of=lambda name: None).status == "pass"


def test_version_out_of_range_fails() -> None:
    row = doctor.check_package("pytest", ">=8.0", version_of=lambda name: "7.4.4")
    assert row.status == "fail" and "7.4.4" in row.detail and "--upgrade" in row.fix
    assert doctor.check_package("pytest", ">=8.0", version_of=lambda name: "8.3.2").status == "pass"


@pytest.mark.parametrize("use_packaging", [True, False])
def test_version_comparison(monkeypatch: pytest.MonkeyPatch, use_packaging: bool) -> None:
    if not use_packaging:  # the fallback when `packaging` is not installed
        monkeypatch.setitem(sys.modules, "packaging.specifiers", None)
    ok = doctor.version_satisfies
    assert ok("2.5.1+cu124", ">=2.4")
    assert not ok("2.3.1", ">=2.4")
    assert ok("2024.10.9", ">=2024.4.15") and not ok("2024.3.5", ">=2024.4.15")
    assert ok("1.26.4", ">=1.24,<3") and not ok("3.0.0", ">=1.24,<3")
    assert ok("13.0", ">=13.0") and ok("2.10.0", ">=2.9")


def test_requirements_parsing() -> None:
    text = "# comment\ntorch>=2.4\nnumpy >= 1.24  # arrays\npytest_timeout>=2.2\n-r other.txt\nrich[jupyter]>=13.0; python_version>'3'\n"
    assert doctor.parse_requirements(text) == {
        "torch": ">=2.4", "numpy": ">=1.24", "pytest-timeout": ">=2.2", "rich": ">=13.0"}


def test_missing_requirements_file_is_reported(tmp_path: Path) -> None:
    ctx = doctor.load_context(False, requirements=tmp_path / "requirements.txt")
    rows = doctor.check_packages(ctx)
    assert rows[0].check == "requirements.txt" and rows[0].status == "warn" and "missing" in rows[0].detail


def test_a_crashing_check_becomes_a_fail_row() -> None:
    def boom() -> doctor.Row:
        raise ZeroDivisionError("division by zero")

    row = doctor._guarded("CUDA", "CUDA", boom)
    assert row.status == "fail" and "ZeroDivisionError" in row.detail


def test_fail_rows_set_exit_1() -> None:
    rows = [doctor.Row("x", "a", "pass"), doctor.Row("x", "b", "absent"), doctor.Row("x", "c", "warn")]
    assert doctor.exit_code(rows) == 0
    assert doctor.exit_code(rows + [doctor.Row("x", "d", "fail")]) == 1


def test_json_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "report.json"
    path.write_text("old", encoding="utf-8")

    def broken_dump(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(doctor.json, "dump", broken_dump)
    with pytest.raises(OSError):
        doctor.write_json_atomic(path, {"a": 1})
    assert path.read_text(encoding="utf-8") == "old"  # the old report survives a failed write
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temp file left behind


def test_upgrade_fix_keeps_the_build_of_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "install_command", lambda: "python -m pip install torch --index-url https://download.pytorch.org/whl/cpu")
    assert doctor.upgrade_torch() == "upgrade torch: python -m pip install --upgrade torch --index-url https://download.pytorch.org/whl/cpu"
    monkeypatch.setattr(doctor, "install_command", lambda: "none: torch >= 2.4 has no Intel-macOS wheels. ...")
    assert doctor.upgrade_torch().startswith("upgrade torch: none:")
