"""Hostile submissions (issue 13): in the instructor modes no submission reaches the graded stage's
reference, forges a result or a skip, survives the grader, or damages another learner; in every
mode hostile input gets one line and the documented exit code, never a traceback or a hang.

The learner files are in ``tests/hostile/``; most are a few lines that a copy of the reference or
of the untouched skeleton runs at import time.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.util import copy_repo, run_grader, stage_file

ROOT_DIR = Path(__file__).resolve().parents[1]
HOSTILE = Path(__file__).resolve().parent / "hostile"
SOLUTION = stage_file(ROOT_DIR, "1.1", "solution").read_text()
SKELETON = (ROOT_DIR / "stages/1.1-positional-embeddings/skeleton/positional.py").read_text()
ANCHOR = "from __future__ import annotations\n"


def with_import_code(base: str, name: str, **subst: str) -> str:
    code = (HOSTILE / name).read_text()
    for k, v in subst.items():
        code = code.replace(k, v)
    assert ANCHOR in base
    return base.replace(ANCHOR, ANCHOR + code + "\n", 1)


def skiptest_skeleton() -> str:
    text = SKELETON.replace("raise NotImplementedError(", "raise unittest.SkipTest(")
    return text.replace(ANCHOR, ANCHOR + "import unittest\n", 1)


def no_traceback(*streams: str) -> None:
    for s in streams:
        assert "Traceback (most recent call last)" not in s, s[-3000:]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One batch over hostile and honest learners (stage 1.1), graded in learner order."""
    tmp = tmp_path_factory.mktemp("hostile")
    repo = copy_repo(tmp / "repo")
    marker = tmp / "daemon-marker.txt"
    subs = tmp / "subs"
    files = {
        "a-vandal": with_import_code(SKELETON, "vandal.py"),  # graded first: damages its tree for the others
        "b-good": SOLUTION,
        "c-zeros": SKELETON,
        "d-reach-reference": (HOSTILE / "reach_reference.py").read_text(),
        "e-skip-module": with_import_code(SKELETON, "skip_module.py"),
        "f-skiptest": skiptest_skeleton(),
        "g-forge-events": with_import_code(SKELETON, "forge_events.py"),
        "h-daemon": with_import_code(SOLUTION, "daemon.py", MARKER=str(marker)),
        "i-patch-checks": with_import_code(SOLUTION.replace("torch.sin(", "torch.COS(").replace("torch.cos(", "torch.sin(").replace("torch.COS(", "torch.cos("), "patch_checks.py"),
        "=SUM(1+1)*cmd": SOLUTION,
    }
    for name, text in files.items():
        (subs / name).mkdir(parents=True)
        (subs / name / "positional.py").write_text(text)
    link = subs / "j-symlink" / "stages" / "1.1-positional-embeddings" / "skeleton"
    link.mkdir(parents=True)
    (link / "positional.py").symlink_to(stage_file(repo, "1.1", "solution"))
    out, results = tmp / "summary.csv", tmp / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    env["PYTHONPATH"] = str(repo)
    proc = subprocess.run(
        [sys.executable, "-m", "grader.batch", str(subs), "1.1", "--csv", str(out), "--results", str(results)],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    finished = time.monotonic()
    rows = {r["submission"]: r for r in csv.DictReader(out.open())} if out.exists() else {}
    data = {p.stem: json.loads(p.read_text()) for p in results.glob("*.json")}
    return repo, proc, rows, data, marker, finished


def _checks(data, name: str):  # type: ignore[no-untyped-def]
    return data[name]["stages"][0]["checks"]


def test_batch_runs_and_escapes_formulas(batch) -> None:  # type: ignore[no-untyped-def]
    _, proc, rows, _, _, _ = batch
    assert proc.returncode == 0, proc.stdout + proc.stderr
    no_traceback(proc.stdout, proc.stderr)
    assert "'=SUM(1+1)*cmd" in rows, list(rows)  # a spreadsheet shows it as text, never runs it
    assert rows["'=SUM(1+1)*cmd"]["1.1 status"] == "passed"
    assert all(r["tests_modified"] == "no" for r in rows.values()), [(k, r["tests_modified"]) for k, r in rows.items()]


def test_one_learner_cannot_damage_the_next(batch) -> None:  # type: ignore[no-untyped-def]
    _, _, rows, _, _, _ = batch
    assert float(rows["a-vandal"]["total points"]) == 0
    good, zeros = rows["b-good"], rows["c-zeros"]
    assert good["1.1 status"] == "passed" and good["total points"] == good["total max"] and float(good["total max"]) > 0
    assert float(zeros["total points"]) == 0 and zeros["total max"] == good["total max"]


@pytest.mark.parametrize("name", ["d-reach-reference", "j-symlink", "e-skip-module", "f-skiptest", "g-forge-events", "i-patch-checks"])
def test_no_submission_earns_what_it_did_not_write(batch, name: str) -> None:  # type: ignore[no-untyped-def]
    _, _, rows, data, _, _ = batch
    row = rows[name]
    assert float(row["total points"]) == 0, (name, row, [(c["name"], c["status"], c["hint"][:100]) for c in _checks(data, name)])
    assert row["total max"] == rows["b-good"]["total max"], f"{name}: the stage's maximum must never shrink"
    assert row["1.1 status"] != "passed"


def test_the_reasons_are_said(batch) -> None:  # type: ignore[no-untyped-def]
    _, _, _, data, _, _ = batch
    hints = {name: {c["hint"] for c in _checks(data, name) if c["status"] != "skipped"} for name in data}
    assert any("symbolic link" in h for h in hints["j-symlink"]), hints["j-symlink"]
    assert any("skipped" in h and "counts as failed" in h for h in hints["e-skip-module"]), hints["e-skip-module"]
    assert any("counts as failed" in h for h in hints["f-skiptest"]), hints["f-skiptest"]
    assert any("checking code" in h for h in hints["i-patch-checks"]), hints["i-patch-checks"]


def test_nothing_outlives_the_grader(batch) -> None:  # type: ignore[no-untyped-def]
    _, _, rows, _, marker, finished = batch
    assert rows["h-daemon"]["1.1 status"] == "passed"  # it did the work; its daemon must still be gone
    time.sleep(max(0.0, finished + 6 - time.monotonic()))
    assert not marker.exists(), "a daemon started by the learner's code outlived the grader"


# ------------------------------------------------------------------ self mode


def test_learner_code_cannot_switch_to_the_reference(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    stage_file(repo, "1.1", "skeleton").write_text(with_import_code(SKELETON, "env_solution.py"))
    run = run_grader(repo, "1.1")
    assert run.returncode == 1 and "passed" not in run.statuses("1.1"), [(c["name"], c["status"]) for c in run.checks()]


def _in_checks() -> str:
    s = SOLUTION
    s = s.replace("    return table.to(torch.float32)", "    raise KeyboardInterrupt\n    return table.to(torch.float32)")
    s = s.replace(
        "        return self.embedding(ids) * math.sqrt(self.d_model)",
        "        class Nasty(Exception):\n            def __str__(self):\n                raise RuntimeError('no')\n        raise Nasty()",
    )
    s = s.replace(
        "        return x + self.embedding(positions).to(x.dtype)",
        "        torch.save(self.embedding.weight, 'pe_table.pt')\n        raise AssertionError('[/cuda] [bold]markup[/bold] ' + 'x' * 1_000_000)",
    )
    return s


def test_hostile_behaviour_in_checks_fails_cleanly(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    stage_file(repo, "1.1", "skeleton").write_text(_in_checks())
    gs = tmp_path / "results.json"
    run = run_grader(repo, "1.1", "--gradescope", str(gs))
    no_traceback(run.stdout, run.stderr)
    assert run.returncode == 1
    by = {c["nodeid"].split("::")[1]: c for c in run.checks()}
    assert by["test_table_matches_formula"]["status"] == "failed" and "KeyboardInterrupt" in by["test_table_matches_formula"]["hint"]
    assert by["test_token_embedding_scaled_by_sqrt_d_model"]["status"] == "failed", by["test_token_embedding_scaled_by_sqrt_d_model"]
    assert all(len(c["hint"]) <= 2100 for c in run.checks()), max(len(c["hint"]) for c in run.checks())
    assert len(run.stdout) < 60_000 and (repo / ".llmfs" / "result.json").stat().st_size < 200_000
    assert "[/cuda] [bold]markup[/bold]" in run.stdout  # shown as text, not read as markup
    assert gs.exists() and json.loads(gs.read_text())["tests"]
    assert not list(repo.rglob("pe_table.pt")), "a file the learner's code saves must not land in the course"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["1.1", "--timeout", "nan"], "--timeout"),
        (["1.1", "--timeout", "inf"], "--timeout"),
        (["1.1", "--stage-timeout", "inf"], "--stage-timeout"),
        (["1.1", "-k", "("], "-k"),
        (["1.1", "-k", "no_such_check_anywhere"], "closest titles"),
        (["1.1", "--memory-limit", "lots"], "--memory-limit"),
        (["1.1", "--submission", ".", "--version", "solution"], "--submission"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    repo = copy_repo(tmp_path / "repo")
    run = run_grader(repo, *args, json_out=False)
    lines = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
    assert run.returncode == 2 and len(lines) == 1 and needle in lines[0], (run.returncode, lines)


def test_k_matches_shown_titles(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    stage_file(repo, "1.1", "skeleton").write_text(SOLUTION)
    run = run_grader(repo, "1.1", "-k", "TokenEmbedding")
    assert run.returncode == 0 and [c["name"].split(" ")[0] for c in run.checks()] == ["TokenEmbedding"], run.checks()


@pytest.mark.parametrize("damage", ["types", "llmfs is a file", "locked"])
def test_progress_trouble_never_costs_the_result(tmp_path: Path, damage: str) -> None:
    repo = copy_repo(tmp_path / "repo")
    stage_file(repo, "1.1", "skeleton").write_text(SOLUTION)
    llmfs = repo / ".llmfs"
    holder = None
    env: dict[str, str] = {}
    if damage == "types":
        llmfs.mkdir(exist_ok=True)
        (llmfs / "progress.json").write_text(json.dumps({"stages": {"1.1": {"skeleton": {"status": "[/x]", "points": "many", "max_points": None, "when": 3}}}}))
    elif damage == "llmfs is a file":
        llmfs.write_text("not a folder")
        env["LLMFS_PROGRESS"] = str(llmfs / "progress.json")
    else:
        llmfs.mkdir(exist_ok=True)
        code = "import fcntl, sys, time; f = open(sys.argv[1], 'a+b'); fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)"
        holder = subprocess.Popen([sys.executable, "-c", code, str(llmfs / "progress.json.lock")], stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    out = tmp_path / "out.json"
    try:
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "grader", "1.1", "-k", "odd_d_model", "--json", str(out)] if damage == "never" else
            [sys.executable, "-m", "grader", "1.1", "--json", str(out)],
            cwd=repo, env={**{k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}, "PYTHONPATH": str(repo), "NO_COLOR": "1",
                           "LLMFS_PROGRESS": str(llmfs / "progress.json"), **env},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        elapsed = time.monotonic() - t0
    finally:
        if holder is not None:
            holder.kill()
    no_traceback(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert json.loads(out.read_text())["stages"][0]["status"] == "passed"
    if damage != "types":
        assert "progress was not recorded" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    if damage == "locked":
        assert elapsed < 60
    if damage == "types":
        m = run_grader(repo, json_out=False)
        no_traceback(m.stdout, m.stderr)
        assert m.returncode == 0 and "1.1" in m.stdout  # the malformed record was set aside; the map shows the new one


def test_release_has_no_solutions_and_grades(tmp_path: Path) -> None:
    dest = tmp_path / "release"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    env["PYTHONPATH"] = str(ROOT_DIR)
    proc = subprocess.run([sys.executable, "-m", "grader.release", str(dest)], cwd=ROOT_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not list(dest.rglob("solution")) and not (dest / "tests").exists()
    assert (dest / "stages/1.4-multi-head-attention/skeleton/multi_head.py").is_file()
    again = subprocess.run([sys.executable, "-m", "grader.release", str(dest)], cwd=ROOT_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    # A learner there: 1.3 and 1.4 written (their own 1.3 feeds 1.4), graded with no reference in reach.
    for sid in ("1.3", "1.4"):
        stage_file(dest, sid, "skeleton").write_text(stage_file(ROOT_DIR, sid, "solution").read_text())
    run = run_grader(dest, "1.4")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    assert "no reference solutions" in run.stdout and run.json["deps"] == "mine"
    # The instructor grades that copy from the full course, where the references are.
    ins = run_grader(copy_repo(tmp_path / "course"), "1.4", "--submission", str(dest))
    assert ins.returncode == 0 and ins.json["deps"] == "solution", ins.stdout[-3000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is enforced on Linux")
def test_runaway_allocation_is_a_clear_failure(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    big = "        big = torch.ones(6 * 2**30, dtype=torch.uint8)\n"
    anchor = "        return self.embedding(ids) * math.sqrt(self.d_model)"
    stage_file(repo, "1.1", "skeleton").write_text(SOLUTION.replace(anchor, big + anchor))
    run = run_grader(repo, "1.1", "-k", "token_embedding", "--memory-limit", "4")
    (check,) = run.checks()
    assert check["status"] == "failed" and "4 GiB of address space" in check["hint"], check


def test_stage_limit_covers_every_restart(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    crash = "    import os, time\n    time.sleep(3)\n    os._exit(1)\n"
    anchor = "    if d_model <= 0 or d_model % 2 != 0:\n"
    stage_file(repo, "1.1", "skeleton").write_text(SOLUTION.replace(anchor, crash + anchor, 1))
    t0 = time.monotonic()
    run = run_grader(repo, "1.1", "--stage-timeout", "20")
    elapsed = time.monotonic() - t0
    hints = [c["hint"] for c in run.checks()]
    assert any("used up its overall time limit of 20 s" in h for h in hints), hints
    assert elapsed < 20 + 15, elapsed  # one child's start-up of slack, not a fresh limit per restart
    assert "passed" not in {c["status"] for c in run.checks() if "sinusoidal" in c["name"]}


def test_pytest_exit_and_xfail_in_checks_fail_them(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    s = SOLUTION.replace("    return table.to(torch.float32)", "    import pytest\n    pytest.exit('bye')\n    return table.to(torch.float32)")
    s = s.replace(
        "        return self.embedding(ids) * math.sqrt(self.d_model)",
        "        import pytest\n        pytest.xfail('later')\n        return self.embedding(ids) * math.sqrt(self.d_model)",
    )
    stage_file(repo, "1.1", "skeleton").write_text(s)
    run = run_grader(repo, "1.1", "-k", "table_matches_formula or token_embedding or odd_d_model")
    by = {c["nodeid"].split("::")[1]: c for c in run.checks()}
    assert by["test_table_matches_formula"]["status"] == "failed" and "pytest.exit" in by["test_table_matches_formula"]["hint"], by
    assert by["test_token_embedding_scaled_by_sqrt_d_model"]["status"] == "failed", by
    assert "xfail" in by["test_token_embedding_scaled_by_sqrt_d_model"]["hint"]
    assert by["test_odd_d_model_raises"]["status"] == "passed"
    assert run.returncode == 1


def test_learner_code_run_before_the_checks_are_fixed_is_not_trusted(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    stage_file(repo, "1.1", "skeleton").write_text(SOLUTION)
    extra = repo / "stages/1.1-positional-embeddings/tests/test_zz_early.py"
    extra.write_text('from shared.loader import load\n\n_early = load("1.1")\n\n\ndef test_nothing() -> None:\n    """a check"""\n')
    run = run_grader(repo, "1.1", "-k", "odd_d_model")
    stage = run.json["stages"][0]
    assert stage["status"] == "error" and "while the checks were being collected" in stage["error"], stage
    assert run.returncode == 1
