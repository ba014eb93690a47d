"""The stage map: every stage's id, folder, title and module. Pure Python, no torch.

This is the single source of truth for which stages exist. The grader, the loader,
the course tests and the README's stage map all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The repository root (the folder holding ``stages/``, ``grader/``, ``shared/``).
ROOT: Path = Path(__file__).resolve().parent.parent
STAGES_DIR: Path = ROOT / "stages"

#: The two versions of every stage.
VERSIONS: tuple[str, ...] = ("skeleton", "solution")
#: Where a stage's earlier components come from: the reference ones, or the learner's own.
DEPS: tuple[str, ...] = ("solution", "mine")


@dataclass(frozen=True)
class Stage:
    id: str  # "1.4": what learners type after `nox -s grade --`
    slug: str  # "multi-head-attention": the folder is stages/<id>-<slug>
    title: str  # one line for the stage map
    module: str  # the file the learner edits, in skeleton/ and solution/, without ".py"
    deps: tuple[str, ...] = ()  # earlier stages whose components this stage uses
    check_timeout: float = 30.0  # seconds one check may take (a check's own marker wins)
    stage_timeout: float = 300.0  # seconds the whole stage may take, start-up included

    @property
    def folder(self) -> Path:
        return STAGES_DIR / f"{self.id}-{self.slug}"

    def version_dir(self, version: str) -> Path:
        return self.folder / version

    def module_path(self, version: str) -> Path:
        return self.version_dir(version) / f"{self.module}.py"

    @property
    def tests_dir(self) -> Path:
        return self.folder / "tests"


STAGES: tuple[Stage, ...] = (
    Stage("0.1", "training-pipeline", "The LLM training pipeline as objectives in code", "pipeline"),
    Stage("0.2", "environment", "PyTorch, CUDA / MPS, mixed precision, profiling", "environment"),
    Stage("1.1", "positional-embeddings", "Positional embeddings: sinusoidal vs learned", "positional"),
    Stage("1.2", "self-attention-by-hand", "Self-attention from first principles (NumPy)", "attention_numpy"),
    Stage("1.3", "attention-head", "One attention head, causal and padding masks", "attention_head"),
    Stage("1.4", "multi-head-attention", "Multi-head attention: self and cross", "multi_head", deps=("1.3",)),
    Stage("1.5a", "feed-forward", "The position-wise feed-forward network and GELU", "feed_forward"),
    Stage("1.5b", "residual-layernorm", "LayerNorm from scratch, residuals, pre-LN vs post-LN", "layer_norm"),
    Stage(
        "1.6",
        "transformer-block",
        "Encoder and decoder blocks, the encoder-decoder, greedy decoding",
        "transformer",
        deps=("1.1", "1.4", "1.5a", "1.5b"),
        stage_timeout=420.0,
    ),
    Stage("2.1", "tokenizer", "Byte-level BPE: train, encode, decode, special tokens", "tokenizer"),
    Stage("2.2", "gpt", "A decoder-only GPT from your Part 1 parts", "gpt", deps=("1.1", "1.4", "1.5a", "1.5b")),
    Stage("2.3", "pretraining", "Pretraining: batches, AdamW groups, schedule, clipping, AMP, checkpoints", "pretraining", deps=("2.1", "2.2", "0.2")),
    Stage("2.4", "generation", "Generation: greedy, temperature, top-k, top-p, the KV cache", "generation", deps=("2.2", "1.4")),
    Stage("2.5", "finetune-align", "Finetune and align your GPT: SFT and DPO with 0.1's losses, LoRA", "finetune", deps=("0.1", "2.1", "2.2", "2.4")),
    Stage("2.6", "distributed", "Data parallelism on torch.distributed: your all-reduce equals DDP", "distributed"),
)

BY_ID: dict[str, Stage] = {s.id: s for s in STAGES}


class UnknownStage(ValueError):
    """A stage selector matched no stage."""


def select(selectors: list[str] | tuple[str, ...]) -> list[Stage]:
    """Stages named by ids (``1.4``), prefixes (``1.5`` -> 1.5a, 1.5b; ``1`` -> all 1.x) or ``all``.

    Returns them in course order without duplicates. Raises UnknownStage naming the
    first selector that matches nothing.
    """
    chosen: set[str] = set()
    for sel in selectors:
        sel = sel.strip()
        if sel == "all":
            chosen.update(BY_ID)
            continue
        if sel in BY_ID:
            chosen.add(sel)
            continue
        # A prefix matches whole id components: "1.5" -> "1.5a", "1" -> "1.x", never "1.1" -> "1.10".
        matches = [
            s.id for s in STAGES if s.id.startswith(sel) and sel and (sel[-1] == "." or not s.id[len(sel)].isdigit())
        ]
        if not matches:
            raise UnknownStage(sel)
        chosen.update(matches)
    return [s for s in STAGES if s.id in chosen]


def stage_of_path(path: Path | str) -> Stage | None:
    """The stage whose folder holds ``path`` (a test file, a module), or None."""
    p = Path(path).resolve()
    for s in STAGES:
        if s.folder == p or s.folder in p.parents:
            return s
    return None
