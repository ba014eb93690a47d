"""``nox -s show``: every figure draws from every solution, skeletons draw "not implemented" panels,
the data behind each figure is right, the lessons' committed images are up to date, and grading
never imports matplotlib.

The figures run in this process (one torch import; the expensive data, 1.6's training and 0.1's
demo, is computed once per module and cached), except the command-line checks, which run
``python -m grader.show`` / ``python -m grader`` as a learner would.
"""

from __future__ import annotations

import math
import os
import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from grader import show
from shared.figures import Figure, canonical, data_hash
from shared.registry import BY_ID, ROOT, STAGES, Stage
from tests.util import skeleton_env

WITH_FIGURES = [s for s in STAGES if show.figures_path(s).is_file()]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk; fails unless ``png`` starts like a real PNG."""
    assert png[:8] == PNG_SIGNATURE, "not a PNG: wrong signature"
    length, kind = struct.unpack(">I4s", png[8:16])
    assert kind == b"IHDR" and length == 13, "not a PNG: no IHDR chunk first"
    return struct.unpack(">II", png[16:24])


def _check_png(png: bytes, what: str) -> None:
    w, h = _png_size(png)
    assert 200 <= w <= 2400 and 120 <= h <= 2400, f"{what}: odd size {w}x{h} px"
    assert 2_000 <= len(png) <= 400_000, f"{what}: {len(png)} bytes"
    assert png.rstrip(b"\0").endswith(b"IEND\xaeB`\x82"), f"{what}: truncated PNG"


@pytest.fixture(scope="module")
def env() -> Iterator[None]:
    """shared.loader's settings as `show --version solution` makes them (it reads them once, at import), restored afterwards."""
    from shared import loader

    mp = pytest.MonkeyPatch()
    mp.setitem(loader._SETTINGS, "version", "solution")
    mp.setitem(loader._SETTINGS, "deps", "solution")
    mp.setitem(loader._SETTINGS, "impl", {})
    yield
    mp.undo()


_DATA: dict[tuple[str, str], Any] = {}


def reference_data(stage: Stage, name: str) -> dict[str, Any]:
    """The reference's data for one figure (computed once per test run)."""
    key = (stage.id, name)
    if key not in _DATA:
        fig = _figure(stage, name)
        module = show._load_module(stage, reference=True)
        assert not isinstance(module, show.Problem), module.text
        _DATA[key] = show.compute(fig, module)
    data = _DATA[key]
    assert not isinstance(data, show.Problem), f"stage {stage.id} {name}: the reference failed: {data.text}"
    return data


def _figure(stage: Stage, name: str) -> Figure:
    return next(f for f in show.load_figures(stage) or [] if f.name == name)


def _ids(stage: Stage) -> str:
    return stage.id


# ----------------------------------------------------------------------------- every figure, every version


@pytest.mark.parametrize("stage", WITH_FIGURES, ids=_ids)
def test_figure_list_is_well_formed(stage: Stage) -> None:
    figures = show.load_figures(stage)
    assert figures, f"{show.figures_path(stage)} has an empty FIGURES"
    names = [f.name for f in figures]
    assert len(set(names)) == len(names), f"duplicate figure names: {names}"
    for f in figures:
        assert isinstance(f, Figure)
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", f.name), f"bad file stem {f.name!r}"
        assert f.stack in ("h", "v") and f.title and f.caption, f.name
        assert 1 <= f.digits <= 8, f.name


@pytest.mark.parametrize("stage", WITH_FIGURES, ids=_ids)
def test_every_figure_draws_from_the_solution(stage: Stage, env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """show_stage(--version solution) writes a real PNG per figure, headless (Agg), and reports no problem."""
    figures = show.load_figures(stage) or []
    for fig in figures:
        reference_data(stage, fig.name)  # computed once here; the data checks below reuse it
    paths, ok = show.show_stage(stage, "solution", tmp_path)
    out = capsys.readouterr().out
    assert ok and " - " not in out, out
    assert [p.name for p in paths] == [f"{f.name}.png" for f in figures]
    for p in paths:
        _check_png(p.read_bytes(), str(p))


@pytest.mark.parametrize("stage", WITH_FIGURES, ids=_ids)
def test_untouched_skeleton_gives_not_implemented(stage: Stage, env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every figure's data, from the committed skeleton, stops at "not implemented yet (Task N: ...)"."""
    from shared import loader

    impl = {k.removeprefix("LLMFS_IMPL_"): v for k, v in skeleton_env([stage.id]).items()}
    monkeypatch.setitem(loader._SETTINGS, "impl", impl)  # as LLMFS_IMPL_<ID> would, read at import
    monkeypatch.setitem(loader._SETTINGS, "version", "skeleton")
    module = show._load_module(stage, reference=False)
    assert not isinstance(module, show.Problem), module.text
    for fig in show.load_figures(stage) or []:
        got = show.compute(fig, module)
        assert isinstance(got, show.Problem) and got.not_implemented, f"{stage.id} {fig.name}: {got}"
        assert re.fullmatch(r"not implemented yet \(Task \d+: .+\)", got.text), got.text


# ----------------------------------------------------------------------------- the data behind each figure


def _sinusoid(max_len: int, d: int) -> np.ndarray:
    """The paper's §3.5 formula, written independently of any stage file."""
    pos = np.arange(max_len)[:, None]
    i = np.arange(d)[None, :]
    angle = pos / np.power(10000.0, (2 * (i // 2)) / d)
    return np.where(i % 2 == 0, np.sin(angle), np.cos(angle))


def test_data_1_1(env: None) -> None:
    stage = BY_ID["1.1"]
    table = reference_data(stage, "sinusoidal-table")["table"]
    np.testing.assert_allclose(table, _sinusoid(*table.shape), atol=1e-5)
    dots = reference_data(stage, "dot-product-by-offset")
    full = _sinusoid(max(dots["starts"]) + len(dots["k"]), table.shape[1])
    for p, row in zip(dots["starts"], dots["dots"], strict=True):
        np.testing.assert_allclose(row, full[p + dots["k"]] @ full[p], atol=1e-3)
    np.testing.assert_allclose(dots["dots"][0], dots["dots"][-1], atol=1e-3)  # depends on k only
    learned = reference_data(stage, "learned-table")["table"]
    assert learned.shape == table.shape and 0.8 < learned.std() < 1.2, "nn.Embedding's N(0, 1) initialisation"


def test_data_1_2(env: None) -> None:
    d = reference_data(BY_ID["1.2"], "worked-example")
    expected = np.array([[0.1863, 0.5065, 0.3072], [0.5465, 0.1220, 0.3315], [0.1554, 0.4223, 0.4223]])  # the lesson
    np.testing.assert_allclose(d["weights"], expected, atol=1e-4)
    np.testing.assert_allclose(d["scores"], [[0.5, 1.5, 1.0], [1.5, 0.0, 1.0], [0.5, 1.5, 1.5]])
    assert np.isneginf(d["masked_scores"][np.triu_indices(3, 1)]).all()
    np.testing.assert_allclose(d["causal_weights"], [[1, 0, 0], [0.8176, 0.1824, 0], expected[2]], atol=1e-4)


def test_data_1_3(env: None) -> None:
    import torch

    d = reference_data(BY_ID["1.3"], "masks-and-weights")
    masks, weights = d["masks"], d["weights"]
    assert masks.shape == weights.shape == (3, 6, 6)
    np.testing.assert_array_equal(masks[0], np.triu(np.ones((6, 6), bool), 1))
    np.testing.assert_array_equal(masks[2], masks[0] | masks[1])
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 6, 8, generator=g, dtype=torch.float32) for _ in range(3))
    for mask, w in zip(masks, weights, strict=True):  # torch's softmax of the masked scores
        scores = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(torch.from_numpy(mask), float("-inf"))
        np.testing.assert_allclose(w, torch.softmax(scores, -1)[0].double().numpy(), atol=1e-6)


def test_data_1_4(env: None) -> None:
    d = reference_data(BY_ID["1.4"], "heads")
    per_head, avg = d["per_head"], d["averaged"]
    assert per_head.shape == (4, 8, 8)
    np.testing.assert_allclose(per_head.mean(0), avg, atol=1e-6)
    np.testing.assert_allclose(per_head.sum(-1), 1.0, atol=1e-5)
    assert (per_head[:, np.triu_indices(8, 1)[0], np.triu_indices(8, 1)[1]] == 0).all(), (
        "causal: nothing above the diagonal"
    )
    assert np.abs(per_head[0] - per_head[1]).max() > 0.05, "the heads should differ"


def test_data_1_5a(env: None) -> None:
    import torch
    import torch.nn.functional as F

    d = reference_data(BY_ID["1.5a"], "gelu")
    x = torch.from_numpy(d["x"])
    np.testing.assert_allclose(d["exact"], F.gelu(x).numpy(), atol=1e-12)
    np.testing.assert_allclose(d["tanh"], F.gelu(x, approximate="tanh").numpy(), atol=1e-12)
    np.testing.assert_allclose(d["relu"], F.relu(x).numpy())


def test_data_1_5b(env: None) -> None:
    stats = reference_data(BY_ID["1.5b"], "token-stats")
    np.testing.assert_allclose(stats["mean_after"], 0.0, atol=1e-5)
    np.testing.assert_allclose(stats["std_after"], 1.0, atol=1e-3)
    assert np.ptp(stats["mean_before"]) > 3 and np.ptp(stats["std_before"]) > 3, "the inputs should differ"
    depth = reference_data(BY_ID["1.5b"], "depth-experiment")
    pre, post = depth["pre_ln"], depth["post_ln"]
    assert pre[-1] < 0.5 * pre[0], f"pre-LN's top-layer gradient should shrink with depth: {pre}"
    assert post[-1] > 0.7 * post[0], f"post-LN's should not: {post}"


def test_data_1_6(env: None) -> None:
    stage = BY_ID["1.6"]
    loss = reference_data(stage, "reverse-loss")
    curve = loss["loss"]
    assert len(curve) == 100 and curve[:10].mean() > 10 * curve[-10:].mean(), "the loss should fall"
    assert loss["exact_match"] >= 0.99
    cross = reference_data(stage, "cross-attention")
    w = cross["cross_attn"]  # (L + 1, L): decoder inputs BOS, reversed source
    L = len(cross["source"])
    assert w.shape == (L + 1, L)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert [int(i) for i in w[:L].argmax(-1)] == list(range(L - 1, -1, -1)), f"no anti-diagonal:\n{w.round(2)}"
    assert cross["decoded"] == ["BOS", *[str(t) for t in cross["source"][::-1]], "EOS"]
    s = reference_data(stage, "decoder-self-attention")["self_attn"]
    assert s.shape == (L + 1, L + 1) and np.allclose(np.triu(s, 1), 0.0), "causal self-attention"


def test_data_2_2(env: None) -> None:
    stage = BY_ID["2.2"]
    stream = reference_data(stage, "residual-stream")
    scaled, unscaled = stream["scaled"], stream["unscaled"]
    assert len(scaled) == 25 and abs(scaled[0] - unscaled[0]) < 1e-9, "the same embeddings start both curves"
    assert scaled[-1] < 1.5 * scaled[0], f"GPT-2's scaled init keeps the stream near its start: {scaled}"
    assert unscaled[-1] > 3 * unscaled[0], f"unscaled residual projections grow it: {unscaled}"
    effect = reference_data(stage, "causality")["effect"]  # (output position, changed input position)
    assert np.all(np.triu(effect, 1) == 0.0), "a change at j moves no logits before j"
    assert np.all(np.diag(effect) > 1e-3) and np.all(np.tril(effect) + np.triu(np.ones_like(effect), 1) > 0)


def test_data_0_1(env: None) -> None:
    d = reference_data(BY_ID["0.1"], "pipeline-curves")
    module = show._load_module(BY_ID["0.1"], reference=True)
    demo = module.run_pipeline_demo()  # the figure repeats the demo: it must land where the demo does
    pre, sft, dpo, margin = d["pretrain_loss"], d["sft_logprob"], d["dpo_loss"], d["reward_margin"]
    assert (len(pre), len(sft), len(dpo)) == (61, 21, 16)
    assert abs(pre[0] - math.log(d["vocab_size"])) < 0.3 and pre[-1] < 0.3
    np.testing.assert_allclose(
        [pre[0], pre[-1]], [demo["pretrain_loss_before"], demo["pretrain_loss_after"]], rtol=1e-4
    )
    np.testing.assert_allclose(
        [sft[0], sft[-1]], [demo["sft_logprob_before"], demo["sft_logprob_after"]], rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose([dpo[0], dpo[-1]], [demo["dpo_loss_before"], demo["dpo_loss_after"]], rtol=1e-4)
    assert abs(dpo[0] - math.log(2)) < 1e-6 and margin[0] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(margin[-1], 0.1 * demo["dpo_margin_after"], rtol=1e-4)  # beta = 0.1


def test_data_0_2(env: None) -> None:
    d = reference_data(BY_ID["0.2"], "matmul-throughput")
    assert d["devices"][0] == "cpu" and d["tflops"].shape == (len(d["devices"]), 3)
    assert math.isfinite(d["tflops"][0, 0]) and d["tflops"][0, 0] > 0
    prof = reference_data(BY_ID["0.2"], "profiler-top-ops")
    assert prof["ops"] and all(isinstance(o, str) for o in prof["ops"])
    assert (np.diff(prof["self_us"]) <= 0).all(), "largest first"
    assert any("mm" in o for o in prof["ops"]), prof["ops"]


# ----------------------------------------------------------------------------- the lessons' images


@pytest.mark.parametrize("stage", WITH_FIGURES, ids=_ids)
def test_lesson_figures_are_up_to_date(stage: Stage, env: None) -> None:
    """stages/<id>/figures/ matches the reference's data (hashed, not the pixels) and the lesson links each image."""
    for fig in show.load_figures(stage) or []:
        if fig.lesson:
            reference_data(stage, fig.name)  # warm the per-module caches
    stale = show.stale_lesson_figures(stage)
    assert not stale, f"{stage.id}: {stale}; run `python -m grader.show all --update-lessons`"
    lesson = (stage.folder / "README.md").read_text(encoding="utf-8")
    for fig in show.load_figures(stage) or []:
        link = f"(figures/{fig.name}.png)"
        if fig.lesson:
            png = (show.lesson_dir(stage) / f"{fig.name}.png").read_bytes()
            _check_png(png, fig.name)
            assert len(png) < 80_000, f"{fig.name}.png is {len(png) // 1024} kB: keep lesson images small"
            assert link in lesson, f"{stage.folder.name}/README.md does not show {link}"
        else:
            assert link not in lesson, f"{fig.name} is not a lesson figure (hardware-dependent) but the lesson links it"
    for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", lesson):
        assert (stage.folder / target).is_file(), f"{stage.folder.name}/README.md links a missing image {target}"


def test_data_hash_rounds_and_tells_changes_apart() -> None:
    base = {"a": np.array([1.0, 2.0, -0.0]), "b": [1, "x"], "c": 0.5}
    assert data_hash(base) == data_hash({"c": 0.5, "b": [1, "x"], "a": np.array([1.0, 2.0, 0.0])})
    assert data_hash(base) == data_hash({**base, "a": np.array([1.00001, 2.0, 0.0])})  # below 4 digits
    assert data_hash(base) != data_hash({**base, "a": np.array([1.001, 2.0, 0.0])})
    assert data_hash(base) != data_hash({**base, "a": np.array([[1.0, 2.0, 0.0]])})  # the shape counts
    assert canonical(np.array([np.nan, np.inf]))["values"] == ["nan", "inf"]
    with pytest.raises(TypeError):
        data_hash({"x": object()})


# ----------------------------------------------------------------------------- the command line


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    full["PYTHONPATH"] = str(ROOT) + os.pathsep + full.get("PYTHONPATH", "")
    full.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, says",
    [
        (["9.9"], "unknown stage '9.9'"),
        (["1.1", "--version", "mine"], "invalid choice"),
        (["1.1", "--bogus"], "unrecognized arguments"),
        ([], "required: STAGE"),
        (["1.1", "--update-lessons", "--check-lessons"], "not allowed with"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    proc = _run("-m", "grader.show", *args, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and says in lines[0], lines


def test_out_must_be_a_folder(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    proc = _run("-m", "grader.show", "1.2", "--out", str(f), timeout=60)
    assert proc.returncode == 2 and "is a file" in proc.stderr and "Traceback" not in proc.stderr


def test_show_on_the_untouched_skeleton_and_on_a_broken_file_exits_cleanly(tmp_path: Path) -> None:
    """The learner's first run (1.2 untouched) and a file that does not import (1.5a): one line each, exit 0."""
    broken = tmp_path / "impl"
    broken.mkdir()
    (broken / "feed_forward.py").write_text("def gelu(:\n")
    out_dir = tmp_path / "out"
    proc = _run("-m", "grader.show", "1.2", "1.5a", "--out", str(out_dir),
                env={**skeleton_env(["1.2"]), "LLMFS_IMPL_1_5a": str(broken)})  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    assert "yours: not implemented yet (Task " in out, out
    assert "feed_forward.py line 1: SyntaxError" in out, out
    for png in (out_dir / "1.2" / "worked-example.png", out_dir / "1.5a" / "gelu.png"):
        assert str(png) in out
        _check_png(png.read_bytes(), str(png))  # yours: a panel saying why; the reference beside it
    assert not list(out_dir.rglob("*.tmp")), "a half-written file was left behind"


_BLOCKER = """
import os, sys
class _NoMatplotlib:
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            with open(os.environ["LLMFS_TEST_MPL_MARK"], "a") as f:
                f.write(f"{os.getpid()} {sys.argv}\\n")
            raise ImportError("matplotlib imported while grading")
        return None
sys.meta_path.insert(0, _NoMatplotlib())
"""


def test_grading_never_imports_matplotlib(tmp_path: Path) -> None:
    """Neither the grader process nor its pytest child imports matplotlib (a sitecustomize blocks and records it)."""
    (tmp_path / "sitecustomize.py").write_text(_BLOCKER)
    mark = tmp_path / "imported.txt"
    full = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "LLMFS_TEST_MPL_MARK": str(mark),
            "LLMFS_PROGRESS": str(tmp_path / "progress.json")}  # fmt: skip
    proc = _run("-m", "grader", "1.1", "--version", "solution", env=full, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not mark.exists(), f"matplotlib was imported while grading: {mark.read_text()}"
    # and the blocker does work: show itself is stopped by it, with one line (as without matplotlib installed)
    proc = _run("-m", "grader.show", "1.2", "--out", str(tmp_path / "o"), env=full)
    assert mark.exists()
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "show: matplotlib is not installed; `pip install -r requirements.txt` installs it"
    ), proc.stdout + proc.stderr
    for path in [*ROOT.glob("grader/*.py"), *ROOT.glob("shared/*.py"), ROOT / "conftest.py",
                 *ROOT.glob("stages/*/tests/**/*.py"), *ROOT.glob("stages/*/s*/*.py")]:  # fmt: skip
        if path.name in ("show.py", "figures.py"):
            continue
        top_level = re.search(r"^(import|from) matplotlib", path.read_text(encoding="utf-8"), re.M)
        assert not top_level, f"{path.relative_to(ROOT)} imports matplotlib when it is imported"


def test_learner_code_that_hangs_or_exits_becomes_a_panel(monkeypatch: pytest.MonkeyPatch) -> None:
    """An endless loop is abandoned after DATA_TIMEOUT (POSIX), sys.exit is drawn, not obeyed."""
    import types

    fig = Figure("x", "x", lambda m: {"y": m.f()}, lambda panel, data: None, caption="x")

    def forever() -> None:
        while True:
            try:
                pass
            except Exception:  # a learner's broad except must not swallow the time limit
                pass

    monkeypatch.setattr(show, "DATA_TIMEOUT", 1)
    if hasattr(show.signal, "SIGALRM"):
        got = show.compute(fig, types.SimpleNamespace(f=forever))
        assert isinstance(got, show.Problem) and "longer than 1 s" in got.text
    got = show.compute(fig, types.SimpleNamespace(f=lambda: sys.exit(3)))
    assert isinstance(got, show.Problem) and got.text == "raised SystemExit: 3"
    got = show.compute(fig, types.SimpleNamespace(f=lambda: (_ for _ in ()).throw(NotImplementedError("Task 7: f"))))
    assert isinstance(got, show.Problem) and got.not_implemented and got.text == "not implemented yet (Task 7: f)"
    png, problems = show.render(fig, [("yours (skeleton)", got)], 60)
    _check_png(png, "problem panel")


def test_a_partly_done_stage_shows_the_work_that_exists(
    tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Task 1 written (with sin and cos swapped), Task 3 not: the first two pictures are the learner's, the third says why."""
    from shared import loader

    stage = BY_ID["1.1"]
    solution = stage.module_path("solution").read_text(encoding="utf-8")
    partial = solution.replace("table[:, 0::2] = torch.sin(angles)", "table[:, 0::2] = torch.cos(angles)").replace(
        "table[:, 1::2] = torch.cos(angles)", "table[:, 1::2] = torch.sin(angles)"
    )
    partial = partial.replace(
        "        super().__init__()\n        self.d_model = d_model\n        self.max_len = max_len\n        self.embedding",
        '        super().__init__()\n        raise NotImplementedError("Task 3: LearnedPositionalEmbedding.__init__")\n'
        "        self.d_model = d_model\n        self.max_len = max_len\n        self.embedding",
    )
    assert partial.count("NotImplementedError") == 1 and "torch.cos(angles)  # even" not in solution
    (tmp_path / "positional.py").write_text(partial, encoding="utf-8")
    monkeypatch.setitem(loader._SETTINGS, "impl", {"1_1": str(tmp_path)})
    monkeypatch.setitem(loader._SETTINGS, "version", "skeleton")
    module = show._load_module(stage, reference=False)
    assert not isinstance(module, show.Problem), module.text
    figs = {f.name: f for f in show.load_figures(stage) or []}
    table = show.compute(figs["sinusoidal-table"], module)
    assert not isinstance(table, show.Problem)
    np.testing.assert_allclose(
        table["table"][0, 0::2], 1.0, atol=1e-6
    )  # position 0 reads cos(0) = 1 in the sin columns
    assert data_hash(table) != data_hash(reference_data(stage, "sinusoidal-table"))
    assert not isinstance(show.compute(figs["dot-product-by-offset"], module), show.Problem)
    learned = show.compute(figs["learned-table"], module)
    assert (
        isinstance(learned, show.Problem)
        and learned.text == "not implemented yet (Task 3: LearnedPositionalEmbedding.__init__)"
    )


def test_data_2_4(env: None) -> None:
    stage = BY_ID["2.4"]
    f = reference_data(stage, "sampling-filters")
    probs = f["probs"]  # (settings, V): softmax of the figure's logits, by definition (float64 here)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    z = np.array([2.2, 1.6, 1.1, 0.9, 0.5, 0.2, -0.1, -0.6, -1.0, -1.5])
    np.testing.assert_allclose(probs[0], np.exp(z) / np.exp(z).sum(), atol=1e-6)
    np.testing.assert_allclose(probs[1], np.exp(z / 0.5) / np.exp(z / 0.5).sum(), atol=1e-6)
    assert [int((row > 0).sum()) for row in probs[3:5]] == [3, 5]  # top-k 3; top-p 0.8: 0.371 + 0.203 + 0.123 + 0.101 = 0.798 < 0.8, so a fifth
    c = reference_data(stage, "kv-cache-work")
    assert list(c["uncached"][:13]) == list(range(4, 16)) + [16] and list(c["cached"][:13]) == [4] + [1] * 12
    assert all(n == 16 for n in c["cached"][13:]), "past block_size the cache is rebuilt from the last block_size tokens"
    assert float(c["diff"].max()) < 1e-4


def test_data_2_3(env: None) -> None:
    """The schedule figure is the lesson's formula: warmup (step + 1) / W, cosine to the floor at S, then the floor."""
    import math

    f = reference_data(BY_ID["2.3"], "lr-schedule")
    W, S, hi, lo = f["warmup"], f["max_steps"], f["max_lr"], f["min_lr"]
    for step, lr in zip(f["steps"], f["lr"], strict=True):
        if step < W:
            want = hi * (step + 1) / W
        elif step <= S:
            want = lo + (hi - lo) * 0.5 * (1 + math.cos(math.pi * (step - W) / (S - W)))
        else:
            want = lo
        assert abs(lr - want) < 1e-12, (step, lr, want)


def test_data_2_6(env: None) -> None:
    """The sharding figure: each epoch gives every window exactly one rank, and the epochs differ."""
    f = reference_data(BY_ID["2.6"], "shards")
    owner, world = f["owner"], f["world"]
    assert ((owner >= 0) & (owner < world)).all(), "a window with no rank, or with two"
    for row in owner:
        counts = np.bincount(row, minlength=world)
        assert counts.max() - counts.min() <= 1, counts
    assert not (owner[0] == owner[1]).all(), "epoch 1 deals the windows out as epoch 0 did"
