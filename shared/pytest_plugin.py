"""Fixtures and markers that every stage's graded tests use.

Loaded for every pytest run in this repository by the root ``conftest.py``.

Fixtures:
    impl     the module of the stage whose tests are running, in the graded version
             (``LLMFS_VERSION``); a broken learner file fails the check with one line.
    setting  one cell of the device / precision matrix (``shared.matrix``); absent
             devices are skipped with a reason.
Markers:
    points(n)   what a check is worth (default 1).
    timeout(s)  pytest-timeout's per-check limit, for the few slow checks.
Every check starts from the same random state (torch, NumPy and ``random`` seeded with 0).
"""

from __future__ import annotations

import random
from types import ModuleType
from typing import Any

import pytest

from shared.loader import load
from shared.registry import stage_of_path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "points(n): what a graded check is worth (default 1)")


@pytest.fixture
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The graded version of the stage that owns the running test file."""
    stage = stage_of_path(request.path)
    if stage is None:
        raise RuntimeError(f"{request.path} is not inside a stage folder; `impl` is for graded stage tests")
    return load(stage.id)


def _settings() -> list[Any]:
    from shared.matrix import SETTINGS

    return [pytest.param(s, id=s.id) for s in SETTINGS]


@pytest.fixture(params=_settings())
def setting(request: pytest.FixtureRequest) -> Any:
    """One (device, autocast dtype) cell; skipped with a reason when this machine lacks it."""
    s = request.param
    reason = s.skip_reason()
    if reason:
        pytest.skip(reason)
    return s


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """The same random state for every check, so failures reproduce."""
    random.seed(0)
    import numpy as np

    np.random.seed(0)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a requirement
        return
    torch.manual_seed(0)
