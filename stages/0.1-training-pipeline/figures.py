"""Stage 0.1's pictures (``nox -s show -- 0.1``): the pipeline demo's three phases, step by step.

Each ``data`` function runs the stage's module ``m`` (yours or the reference); see shared/figures.py.
``_curves`` repeats the given ``run_pipeline_demo`` (same seed, data, model, steps and learning
rates) with *your* objectives, and records each phase's quantity at every step.
"""

from __future__ import annotations

import copy
import functools
from types import ModuleType
from typing import Any

import numpy as np
import torch

from shared.figures import Figure

PRETRAIN_STEPS, SFT_STEPS, DPO_STEPS, BETA = 60, 20, 15, 0.1  # as run_pipeline_demo


@functools.lru_cache(maxsize=4)
def _curves(m: ModuleType) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast, and the same on every machine
    try:
        with torch.random.fork_rng(devices=[]):
            return _curves_body(m)
    finally:
        torch.set_num_threads(threads)


def _curves_body(m: ModuleType) -> dict[str, Any]:
    torch.manual_seed(0)
    device = torch.device("cpu")
    tok = m.CharTokenizer(m.CORPUS + "".join(p + r for p, r in m.SFT_DATA)
                          + "".join("".join(t) for t in m.PREFERENCE_DATA))  # fmt: skip
    model = m.TinyLM(m.TinyLMConfig(vocab_size=tok.vocab_size))
    out: dict[str, Any] = {"vocab_size": int(tok.vocab_size)}

    # phase 1: pretraining, lm_loss on the corpus windows; the loss before each step, then after the last
    inputs, targets = m.make_lm_pairs(tok.encode(m.CORPUS), context_len=16, stride=4)  # (M, 16) each
    opt = m._Adam(list(model.parameters()), lr=1e-2)
    losses = []
    for _ in range(PRETRAIN_STEPS):
        loss = m.lm_loss(model(inputs), targets)
        losses.append(float(loss.detach()))
        opt.step(loss)
    with torch.no_grad():
        losses.append(float(m.lm_loss(model(inputs), targets)))
    out["pretrain_loss"] = np.array(losses)

    # phase 2: SFT; mean log p(response | prompt) before each step, then after the last
    sft_ids, sft_labels = m._batch(tok, m.SFT_DATA, device)
    opt = m._Adam(list(model.parameters()), lr=1e-2)
    logps = []
    for _ in range(SFT_STEPS):
        logits = model(sft_ids)
        with torch.no_grad():
            logps.append(float(m.sequence_logprob(logits, sft_labels).mean()))
        opt.step(m.sft_loss(logits, sft_labels))
    with torch.no_grad():
        logps.append(float(m.sequence_logprob(model(sft_ids), sft_labels).mean()))
    out["sft_logprob"] = np.array(logps)

    # phase 3: DPO against a frozen copy of the SFT model; the loss and the reward margin at each step
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    B = len(m.PREFERENCE_DATA)
    pref_ids, pref_labels = m._batch(
        tok, [(p, c) for p, c, _ in m.PREFERENCE_DATA] + [(p, r) for p, _, r in m.PREFERENCE_DATA], device
    )  # (2B, T): rows 0..B-1 chosen, rows B..2B-1 rejected
    with torch.no_grad():
        ref = m.sequence_logprob(reference(pref_ids), pref_labels)  # (2B,)
    ref_chosen, ref_rejected = ref[:B], ref[B:]
    opt = m._Adam(list(model.parameters()), lr=2e-3)
    dpo, margin = [], []
    for step in range(DPO_STEPS + 1):
        logps_ = m.sequence_logprob(model(pref_ids), pref_labels)  # (2B,)
        chosen, rejected = logps_[:B], logps_[B:]
        loss = m.dpo_loss(chosen, rejected, ref_chosen, ref_rejected, BETA)
        dpo.append(float(loss.detach()))
        margin.append(float((BETA * ((chosen - ref_chosen) - (rejected - ref_rejected))).mean().detach()))
        if step < DPO_STEPS:
            opt.step(loss)
    out["dpo_loss"] = np.array(dpo)
    out["reward_margin"] = np.array(margin)  # beta * (implicit reward of chosen - of rejected)
    return out


def curves_data(m: ModuleType) -> dict[str, Any]:
    return dict(_curves(m))


def draw_curves(panel: Any, data: dict[str, Any]) -> None:
    a, b, c = panel.subplots(1, 3)
    a.plot(data["pretrain_loss"], lw=1.4)
    a.axhline(np.log(data["vocab_size"]), color="0.6", ls=":", lw=1)
    a.text(len(data["pretrain_loss"]) - 1, np.log(data["vocab_size"]), "log V (uniform) ", ha="right", va="top",
           fontsize=7, color="0.4")  # fmt: skip
    a.set_title("1. pretraining: lm_loss", fontsize=9)
    a.set_ylabel("nats per token", fontsize=8)
    b.plot(data["sft_logprob"], lw=1.4, color="tab:green")
    b.set_title("2. SFT: log p(response | prompt)", fontsize=9)
    b.set_ylabel("nats per response", fontsize=8)
    c.plot(data["dpo_loss"], lw=1.4, color="tab:red", label="dpo_loss")
    c.plot(data["reward_margin"], "--", lw=1.4, color="tab:purple", label="β × reward margin")
    c.axhline(np.log(2), color="0.6", ls=":", lw=1)
    c.set_title("3. DPO", fontsize=9)
    c.legend(fontsize=7)
    for ax in (a, b, c):
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)


FIGURES: list[Figure] = [
    Figure(
        "pipeline-curves", "The pipeline demo, step by step", curves_data, draw_curves,
        caption="Pretraining starts near log V; SFT lifts the answers' log-probability to about 0; "
                "DPO starts at log 2 and widens the reward margin.",
        size=(9.0, 2.8), stack="v", digits=2,
    ),
]  # fmt: skip
