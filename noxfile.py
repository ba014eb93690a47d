"""Sessions for learners, instructors and maintainers.

    nox -s grade -- <stage>...   grade your work (see README "How grading works")
    nox -s doctor                check this machine: torch build, CUDA / MPS, autocast, profiler
    nox -s bench -- <stage>      time a stage's implementation against the torch reference
    nox -s example -- <stage>    re-run a lesson's worked example (add --version solution for the reference)
    nox -s show -- <stage>       draw a stage's figures from your code, beside the reference's
    nox -s train                 pretrain your GPT (stage 2.3) and save a checkpoint for nox -s generate
    nox -s generate -- "def "    your trained GPT writes text (stage 2.4's sampler and KV cache)
    nox -s tests                 the course's own test suite (maintainers, CI)
    nox -s lint                  ruff, in its own virtual environment

grade, doctor, bench, example and tests run in the *active* Python environment (python=False):
the environment being checked is yours, and torch is never reinstalled.
Forgot the ``--``? ``nox -s grade 1.1`` makes nox look for a session named "1.1"
("Sessions not found: 1.1"); write ``nox -s grade -- 1.1``, or ``python -m grader 1.1``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
nox.options.sessions = ["grade"]
nox.options.default_venv_backend = "venv"


def _quiet_uv_probe() -> None:
    """nox looks for the uv binary before every session, even one with python=False, and logs
    "uv binary not found." when there is none. Run its (cached) probe once with nox's logger muted."""
    try:
        from nox.virtualenv import find_uv
    except ImportError:  # an older nox: it probes (and logs) at import time, before this file is read
        return
    log = logging.getLogger("nox")
    was = log.disabled
    log.disabled = True
    try:
        find_uv()  # functools.cache: the session's own lookup reuses this result and logs nothing
    except Exception:  # never let a probe stop a session; nox will probe (and log) again itself
        pass
    finally:
        log.disabled = was


_quiet_uv_probe()


def _exit_with(code: int) -> None:
    """End nox with the grader's own exit status (nox alone would turn 2 into 1)."""
    if code:
        sys.stdout.flush()
        sys.stderr.flush()
        raise SystemExit(code)


@nox.session(python=False)
def grade(session: nox.Session) -> None:
    """Grade stages: nox -s grade -- <stage>... [--version skeleton|solution] [--deps solution|mine] [--json PATH]."""
    sys.path.insert(0, str(ROOT))
    from grader.cli import main  # in-process: one Python start-up fewer than a subprocess

    _exit_with(main(session.posargs))


@nox.session(python=False)
def doctor(session: nox.Session) -> None:
    """Report on this machine's Python, torch build, CUDA / MPS, autocast and profiler: nox -s doctor [-- --verbose] [--json PATH]."""
    session.run(sys.executable, "-m", "grader.doctor", *session.posargs, external=True, env={"PYTHONPATH": str(ROOT)})


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Time a stage against the torch reference: nox -s bench -- <stage> [--version ...] [--device ...]."""
    session.run(sys.executable, "-m", "grader.bench", *session.posargs, external=True, env={"PYTHONPATH": str(ROOT)})


@nox.session(python=False)
def example(session: nox.Session) -> None:
    """Re-run a lesson's worked example: nox -s example -- <stage> [--version skeleton|solution]."""
    sys.path.insert(0, str(ROOT))
    from grader.example import main

    _exit_with(main(session.posargs))


@nox.session(python=False)
def show(session: nox.Session) -> None:
    """Draw a stage's figures from your code beside the reference's: nox -s show -- <stage>... [--version ...] [--out DIR] [--open]."""
    sys.path.insert(0, str(ROOT))
    from grader.show import main  # in-process, like grade: the exit status (2 for usage) comes through as it is

    _exit_with(main(session.posargs))


@nox.session(python=False)
def train(session: nox.Session) -> None:
    """Pretrain your GPT: nox -s train -- [--config tiny|small] [--corpus FILE] [--steps N] [--resume] [--device ...] [--run NAME]."""
    sys.path.insert(0, str(ROOT))
    from grader.train import main  # in-process: Ctrl-C reaches the training loop, which saves a checkpoint

    _exit_with(main(session.posargs))


@nox.session(python=False)
def generate(session: nox.Session) -> None:
    """Sample from your trained GPT: nox -s generate -- "prompt" [--checkpoint PATH] [--temperature T] [--top-k K] [--top-p P] [--max-new-tokens N] [--seed S] [--no-cache]."""
    sys.path.insert(0, str(ROOT))
    from grader.generate import main  # in-process: the stream reaches the terminal as it is produced

    _exit_with(main(session.posargs))


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The course's own test suite (what CI runs). Skeleton checks use the skeletons committed in HEAD."""
    session.run(
        sys.executable, "-m", "pytest", "-p", "pytest_timeout", *(session.posargs or ["tests"]),
        external=True, env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )  # fmt: skip


@nox.session(reuse_venv=True)
def lint(session: nox.Session) -> None:
    """ruff check + format check, in its own virtual environment."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
