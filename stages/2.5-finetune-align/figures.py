"""Stage 2.5's picture (``nox -s show -- 2.5``): what DPO steps do to the chosen and rejected answers.

``data`` runs the stage's module ``m`` (yours or the reference) on the worked example's tiny problem
(a bytes-only tokenizer, a random one-block GPT, three preference pairs); see shared/figures.py.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from shared.figures import Figure
from shared.loader import load_dep

STEPS = 16
BETA = 0.5
TRIPLES = [("f a", "def f(a) -> None:", "def f(a):"), ("gg b", "def gg(b) -> None:", "def gg(b):"),
           ("hh x, y", "def hh(x, y) -> None:", "def hh(x, y):")]  # fmt: skip


def dpo_data(m: ModuleType) -> dict[str, Any]:
    """Per DPO step: the mean implicit reward beta * (log pi - log pi_ref) of the chosen and of the rejected answers."""
    gpt = load_dep("2.2")
    tok = load_dep("2.1").BPETokenizer({}, {"<|endoftext|>": 256})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        policy = gpt.GPT(gpt.GPTConfig(vocab_size=257, block_size=64, d_model=32, n_layers=1, n_heads=2))
        reference = m.frozen_reference(policy)
        ids, labels = m.dpo_batch(tok, TRIPLES)
        B = len(TRIPLES)
        opt = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.2)
        chosen, rejected, loss = [], [], []
        with torch.no_grad():
            ref = m.response_logprobs(reference, ids, labels)  # (2B,)
        for _ in range(STEPS + 1):
            with torch.no_grad():
                reward = BETA * (m.response_logprobs(policy, ids, labels) - ref)  # (2B,)
            chosen.append(float(reward[:B].mean()))
            rejected.append(float(reward[B:].mean()))
            loss.append(float(torch.nn.functional.softplus(-(reward[:B] - reward[B:])).mean()))
            m.dpo_step(policy, reference, opt, ids, labels, beta=BETA)
    return {"step": list(range(STEPS + 1)), "chosen": chosen, "rejected": rejected, "loss": loss}


def draw_dpo(panel: Any, data: dict[str, Any]) -> None:
    ax = panel.subplots()
    ax.plot(data["step"], data["chosen"], "o-", ms=3, lw=1.4, color="tab:green", label="chosen: β log π/π_ref")
    ax.plot(data["step"], data["rejected"], "o-", ms=3, lw=1.4, color="tab:red", label="rejected: β log π/π_ref")
    ax.plot(data["step"], data["loss"], "--", lw=1.2, color="grey", label="DPO loss")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_xlabel("DPO step (SGD, β = 0.5)", fontsize=8)
    ax.set_ylabel("implicit reward / loss", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


FIGURES: list[Figure] = [
    Figure(
        "dpo-rewards", "DPO separates the chosen answer from the rejected one", dpo_data, draw_dpo,
        caption="Both implicit rewards start at 0 (policy = reference) and the loss at log 2; the chosen reward climbs, the rejected one (a prefix of the chosen answer) stays near 0, and the loss falls to 0.",
        size=(4.4, 3.2), digits=2,
    ),
]  # fmt: skip
