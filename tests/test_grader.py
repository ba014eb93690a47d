"""The grader's contract (DESIGN §4, §7): statuses, exit codes, JSON, the stage map, and
hostile or broken learner code — none of which may ever count as a pass.

Each case writes a learner file into stage 1.1's skeleton in a scratch copy of the
repository and runs the real grader (``python -m grader``) there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.util import copy_repo, run_grader, skeleton_file, stage_file

ROOT_DIR = Path(__file__).resolve().parents[1]
SOLUTION = stage_file(ROOT_DIR, "1.1", "solution").read_text()
FEW = "table_matches_formula or odd_d_model"  # two quick checks that both call sinusoidal_table
TOKEN = "table_matches_formula or token_embedding"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("grader") / "repo")


def learner(repo: Path, text: str | None) -> Path:
    """Put ``text`` in 1.1's skeleton (None: delete the file)."""
    path = stage_file(repo, "1.1", "skeleton")
    if text is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(text)
    return path


def at_import(src: str, code: str) -> str:
    """The solution with ``code`` run at import time (after the __future__ import)."""
    anchor = "from __future__ import annotations\n"
    assert anchor in src
    return src.replace(anchor, anchor + code, 1)


def in_table(src: str, code: str) -> str:
    """The solution with ``code`` run at the start of sinusoidal_table."""
    anchor = '    if d_model <= 0 or d_model % 2 != 0:\n'
    assert anchor in src
    return src.replace(anchor, code + anchor, 1)


def in_token_forward(src: str, code: str) -> str:
    anchor = "        return self.embedding(ids) * math.sqrt(self.d_model)"
    assert anchor in src
    return src.replace(anchor, code + anchor, 1)


def no_traceback(run) -> None:  # type: ignore[no-untyped-def]
    for stream in (run.stdout, run.stderr):
        assert "Traceback (most recent call last)" not in stream, stream


# ------------------------------------------------------------------ the basic contract


def test_solution_passes_exit_0_and_json(repo: Path) -> None:
    learner(repo, SOLUTION)
    run = run_grader(repo, "1.1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.statuses("1.1") <= {"passed", "skipped"} and "passed" in run.statuses("1.1")
    stage = run.json["stages"][0]
    assert stage["status"] == "passed" and stage["points"] == stage["max_points"] > 0
    skipped = [c for c in run.checks() if c["status"] == "skipped"]
    assert all(c["hint"] for c in skipped), "a skip must say why"
    assert all(c["points"] == 0 for c in skipped)
    assert "Total:" in run.stdout and "Environment: torch" in run.stdout


def test_untouched_skeleton_not_implemented_exit_1(repo: Path) -> None:
    learner(repo, skeleton_file("1.1").read_text())
    run = run_grader(repo, "1.1")
    assert run.returncode == 1
    assert run.statuses("1.1") <= {"not implemented", "skipped"}
    assert "Not implemented yet: Task 1" in run.stdout
    assert run.json["stages"][0]["points"] == 0


def test_unknown_stage_is_one_line_exit_2(repo: Path) -> None:
    run = run_grader(repo, "9.9", json_out=False)
    assert run.returncode == 2
    lines = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "9.9" in lines[0] and "1.5a" in lines[0] and "1.6" in lines[0]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["1.1", "--version", "mine"], "--version"),
        (["1.1", "--deps", "yours"], "--deps"),
        (["1.1", "--bogus"], "--bogus"),
        (["1.1", "--timeout", "-3"], "--timeout"),
        (["1.1", "--timeout", "soon"], "--timeout"),
        (["1.1", "--stage-timeout", "0"], "--stage-timeout"),
        (["1.1", "--submission"], "--submission"),
    ],
)
def test_bad_flags_are_one_line_exit_2(repo: Path, args: list[str], needle: str) -> None:
    run = run_grader(repo, *args, json_out=False)
    assert run.returncode == 2
    lines = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], lines
    no_traceback(run)


def test_stage_map_shows_last_result_and_next(repo: Path) -> None:
    learner(repo, SOLUTION)
    assert run_grader(repo, "1.1").returncode == 0
    run = run_grader(repo, json_out=False)
    assert run.returncode == 0
    row = next(ln for ln in run.stdout.splitlines() if ln.startswith("| 1.1"))
    assert "passed" in row
    first = next(ln for ln in run.stdout.splitlines() if ln.startswith("| 0.1"))
    assert "<- next" in first  # 0.1 has not been graded in this copy
    assert "nox -s grade -- 0.1" in run.stdout


def test_keyword_selects_checks_and_does_not_record(repo: Path) -> None:
    learner(repo, SOLUTION)
    progress = repo / ".llmfs" / "progress.json"
    progress.unlink(missing_ok=True)
    run = run_grader(repo, "1.1", "-k", "odd_d_model")
    assert run.returncode == 0 and len(run.checks()) == 1
    assert not progress.exists(), "a -k run grades part of a stage: it must not be recorded as the stage's result"


def test_grader_process_never_imports_torch(repo: Path) -> None:
    learner(repo, SOLUTION)
    code = (
        "import sys; from grader.cli import main; rc = main(['1.1', '--version', 'solution']);"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)"
    )
    env = {**os.environ, "PYTHONPATH": str(repo), "LLMFS_PROGRESS": str(repo / ".llmfs" / "p.json")}
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("NO-TORCH 0"), out.stdout[-500:] + out.stderr


# ------------------------------------------------------------------ broken and hostile learner code


@pytest.mark.parametrize(
    "case, make, status, hint",
    [
        ("syntax error", lambda s: s + "\ndef broken(:\n", "failed", "SyntaxError"),
        ("missing module", lambda s: at_import(s, "import module_that_does_not_exist\n"), "failed", "module_that_does_not_exist"),
        ("exception at import", lambda s: at_import(s, "raise RuntimeError('boom at import')\n"), "failed", "boom at import"),
        ("sys.exit at import", lambda s: at_import(s, "import sys\nsys.exit(0)\n"), "failed", "sys.exit"),
        ("os._exit at import", lambda s: at_import(s, "import os\nos._exit(0)\n"), "crashed", "ended the process"),
        ("sys.exit in a check", lambda s: in_table(s, "    import sys\n    sys.exit(0)\n"), "failed", "sys.exit(0)"),
        ("NaN outputs", lambda s: s.replace("return table.to(torch.float32)", "return table.to(torch.float32) * float('nan')"), "failed", "NaN"),
        ("wrong dtype", lambda s: s.replace("return table.to(torch.float32)", "return table"), "failed", "float32"),
        ("wrong shape", lambda s: s.replace("return table.to(torch.float32)", "return table.to(torch.float32).T"), "failed", "shape"),
        ("wrong device", lambda s: s.replace("return table.to(torch.float32)", "return table.to(torch.float32).to('meta')"), "failed", "meta"),
        ("learner file deleted", None, "failed", "git checkout"),
    ],
)
def test_broken_learner_code_never_passes(repo: Path, case: str, make, status: str, hint: str) -> None:  # type: ignore[no-untyped-def]
    learner(repo, None if make is None else make(SOLUTION))
    # Import-time problems break every check; a wrong output breaks the check that looks at it.
    select = "table_matches_formula" if case.startswith(("NaN", "wrong")) else FEW
    run = run_grader(repo, "1.1", "-k", select, "--timeout", "10")
    assert run.returncode == 1, f"{case}: exit {run.returncode}\n{run.stdout}"
    checks = run.checks("1.1")
    assert len(checks) == len(select.split(" or ")) and all(c["status"] == status for c in checks), f"{case}: {[(c['status'], c['hint']) for c in checks]}"
    assert all(hint in c["hint"] for c in checks), f"{case}: {[c['hint'] for c in checks]}"
    no_traceback(run)
    learner(repo, SOLUTION)


def test_infinite_loop_in_a_check_times_out(repo: Path) -> None:
    learner(repo, in_table(SOLUTION, "    while True:\n        pass\n"))
    t0 = time.monotonic()
    run = run_grader(repo, "1.1", "-k", TOKEN, "--timeout", "2")
    assert time.monotonic() - t0 < 30
    by = {c["name"].split(" ")[0]: c for c in run.checks()}
    assert by["sinusoidal_table"]["status"] == "timed out", by
    assert by["TokenEmbedding"]["status"] == "passed", "the other checks still run"
    assert run.returncode == 1
    no_traceback(run)


def test_infinite_loop_at_import_times_out(repo: Path) -> None:
    learner(repo, at_import(SOLUTION, "while True:\n    pass\n"))
    run = run_grader(repo, "1.1", "-k", FEW, "--timeout", "2")
    assert run.returncode == 1
    assert run.statuses() == {"timed out"}, [(c["status"], c["hint"]) for c in run.checks()]


@pytest.mark.skipif(os.name != "posix", reason="blocks SIGALRM, a POSIX signal")
def test_stage_limit_stops_a_hang_the_check_limit_cannot(repo: Path) -> None:
    # A loop with SIGALRM blocked: pytest-timeout's signal never arrives; the stage's overall limit must act.
    hang = (
        "        import signal\n"
        "        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n"
        "        while True:\n"
        "            pass\n"
    )
    learner(repo, in_token_forward(SOLUTION, hang))
    t0 = time.monotonic()
    run = run_grader(repo, "1.1", "-k", TOKEN, "--timeout", "1", "--stage-timeout", "20")
    assert time.monotonic() - t0 < 60  # (the 20 s limit covers start-up, slow on a loaded machine)
    by = {c["name"].split(" ")[0]: c for c in run.checks()}
    assert by["TokenEmbedding"]["status"] == "timed out", by
    assert by["sinusoidal_table"]["status"] == "passed"
    assert run.returncode == 1
    no_traceback(run)


def test_a_crash_in_one_stage_does_not_stop_the_others(repo: Path) -> None:
    learner(repo, at_import(SOLUTION, "import os\nos._exit(0)\n"))
    fill = stage_file(repo, "1.2", "solution").read_text()
    stage_file(repo, "1.2", "skeleton").write_text(fill)
    run = run_grader(repo, "1.1", "1.2")
    assert run.statuses("1.1") <= {"crashed", "skipped"} and "crashed" in run.statuses("1.1")
    assert run.statuses("1.2") == {"passed"}, [(c["name"], c["status"], c["hint"]) for c in run.checks("1.2")]
    assert run.returncode == 1
    learner(repo, SOLUTION)


def test_os_exit_in_one_check_crashes_only_that_check(repo: Path) -> None:
    learner(repo, in_token_forward(SOLUTION, "        import os\n        os._exit(0)\n"))
    run = run_grader(repo, "1.1", "-k", TOKEN)
    by = {c["name"].split(" ")[0]: c for c in run.checks()}
    assert by["TokenEmbedding"]["status"] == "crashed", by
    assert "exited with status 0" in by["TokenEmbedding"]["hint"]
    assert by["sinusoidal_table"]["status"] == "passed"
    assert run.returncode == 1


@pytest.mark.skipif(os.name != "posix", reason="segfault signals are POSIX")
@pytest.mark.parametrize("where", ["import", "check"])
def test_segfault_is_crashed(repo: Path, where: str) -> None:
    boom = "import ctypes\nctypes.string_at(0)\n"
    if where == "import":
        text = at_import(SOLUTION, boom)
    else:
        text = in_token_forward(SOLUTION, "        import ctypes\n        ctypes.string_at(0)\n")
    learner(repo, text)
    run = run_grader(repo, "1.1", "-k", TOKEN)
    crashed = [c for c in run.checks() if c["status"] == "crashed"]
    assert crashed and all("SIGSEGV" in c["hint"] for c in crashed), run.checks()
    assert "passed" not in run.statuses() or where == "check"
    assert run.returncode == 1
    no_traceback(run)


def test_flood_of_output_does_not_reach_the_report(repo: Path) -> None:
    learner(repo, in_table(SOLUTION, "    print('x' * 10_000_000)\n"))
    run = run_grader(repo, "1.1", "-k", FEW)
    assert run.returncode == 0, run.stdout[-2000:]
    assert len(run.stdout) < 20_000 and len(run.stderr) < 20_000


# ------------------------------------------------------------------ the progress file


@pytest.mark.parametrize("damage", ["garbage", "wrong shape", "a folder"])
def test_damaged_progress_file_is_set_aside(repo: Path, damage: str) -> None:
    learner(repo, SOLUTION)
    progress = repo / ".llmfs" / "progress.json"
    progress.parent.mkdir(exist_ok=True)
    corrupt = repo / ".llmfs" / "progress.json.corrupt"
    for p in (progress, corrupt):
        if p.is_dir():
            p.rmdir()
        else:
            p.unlink(missing_ok=True)
    if damage == "garbage":
        progress.write_text('{"stages": {"1.1": ')
    elif damage == "wrong shape":
        progress.write_text('["not", "a", "record"]')
    else:
        progress.mkdir()
    run = run_grader(repo, "1.1")
    assert run.returncode == 0
    assert "unreadable" in run.stdout and "progress.json.corrupt" in run.stdout
    assert json.loads(progress.read_text())["stages"]["1.1"]["skeleton"]["status"] == "passed"
    assert corrupt.exists()
    no_traceback(run)
    # The stage map with a damaged file: one line, exit 2, and the next run starts clean.
    if corrupt.is_dir():
        corrupt.rmdir()
    else:
        corrupt.unlink()
    progress.write_text("{{{")
    m = run_grader(repo, json_out=False)
    assert m.returncode == 2 and len([ln for ln in (m.stdout + m.stderr).splitlines() if ln.strip()]) == 1
    assert run_grader(repo, json_out=False).returncode == 0


def _grader_cmd(repo: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    env.update(PYTHONPATH=str(repo), LLMFS_PROGRESS=str(repo / ".llmfs" / "progress.json"), NO_COLOR="1")
    return [sys.executable, "-m", "grader", *args], env


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to a process group")
def test_ctrl_c_leaves_progress_valid(repo: Path) -> None:
    learner(repo, SOLUTION)
    assert run_grader(repo, "1.1").returncode == 0
    progress = repo / ".llmfs" / "progress.json"
    before = progress.read_text()
    learner(repo, in_table(SOLUTION, "    while True:\n        pass\n"))
    cmd, env = _grader_cmd(repo, "1.1", "--timeout", "60")
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(4)  # the child is now stuck in the loop
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err and "Traceback" not in out + err
    assert progress.read_text() == before
    json.loads(progress.read_text())
    learner(repo, SOLUTION)


def test_two_graders_at_once(repo: Path) -> None:
    learner(repo, SOLUTION)
    procs = []
    for stage in ("1.1", "1.1"):
        cmd, env = _grader_cmd(repo, stage)
        procs.append(subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, out + err
    data = json.loads((repo / ".llmfs" / "progress.json").read_text())
    assert data["stages"]["1.1"]["skeleton"]["status"] == "passed"
    assert not list((repo / ".llmfs").glob("*.tmp")), "no temp file may be left behind"


def test_started_from_another_directory(repo: Path, tmp_path: Path) -> None:
    learner(repo, SOLUTION)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    env.update(LLMFS_PROGRESS=str(repo / ".llmfs" / "progress.json"), NO_COLOR="1")
    proc = subprocess.run(
        [sys.executable, "-m", "nox", "-f", str(repo / "noxfile.py"), "-s", "grade", "--", "1.1", "-k", FEW],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2/2 points" in proc.stdout or "Total: 3/3" in proc.stdout or "all checks passed" in proc.stdout


def test_deps_mine_names_the_unfinished_earlier_stage(repo: Path) -> None:
    stage_file(repo, "1.4", "skeleton").write_text(stage_file(repo, "1.4", "solution").read_text())
    run = run_grader(repo, "1.4", "--deps", "mine")
    todo = [c for c in run.checks() if c["status"] == "not implemented"]
    assert todo and all("stage 1.3" in c["hint"] for c in todo), [(c["name"], c["hint"]) for c in run.checks()]
    assert "passed" in run.statuses(), "checks that do not use stage 1.3 still pass"
    default = run_grader(repo, "1.4")  # --deps solution: the reference 1.3, so everything passes
    assert default.returncode == 0


def test_inherited_loader_variables_cannot_change_what_is_graded(repo: Path) -> None:
    learner(repo, skeleton_file("1.1").read_text())
    solution_dir = str(stage_file(repo, "1.1", "solution").parent)
    run = run_grader(repo, "1.1", env={"LLMFS_IMPL_1_1": solution_dir, "LLMFS_VERSION": "solution"})
    assert run.returncode == 1 and run.statuses("1.1") <= {"not implemented", "skipped"}
    learner(repo, SOLUTION)


def test_thread_timeout_method_is_reported_as_timed_out(tmp_path: Path) -> None:
    """Windows has no SIGALRM: pytest-timeout's thread method ends the process; the check is still 'timed out'."""
    from grader.runner import RunOptions, run_stages
    from shared.registry import BY_ID

    (tmp_path / "positional.py").write_text(in_table(SOLUTION, "    while True:\n        pass\n"))
    opts = RunOptions(version="solution", keyword=TOKEN, timeout=2, timeout_method="thread",
                      env={"LLMFS_IMPL_1_1": str(tmp_path)})  # fmt: skip
    (result,), _ = run_stages([BY_ID["1.1"]], opts)
    by = {c.name.split(" ")[0]: c for c in result.checks}
    assert by["sinusoidal_table"].status == "timed out", [(c.name, c.status, c.hint) for c in result.checks]
    assert by["TokenEmbedding"].status == "passed"
