"""Graded checks for stage 2.5 — finetuning (SFT) and alignment (DPO) of a GPT.

Reference numerics, computed here from their definitions (never from your file):
  * labels and batches: the chat template and prompt masking written out token by token;
  * log-probabilities: ``torch.nn.functional.log_softmax`` + ``gather`` summed over the response
    tokens (the quantity log π(y|x) of Rafailov et al., 2023, §4);
  * the DPO loss: eq. 7 of Rafailov et al. (2023), −log σ(β[(log π − log π_ref)(y_w) − (log π − log π_ref)(y_l)]),
    with ``torch.nn.functional.logsigmoid``;
  * the KL: ``torch.nn.functional.kl_div`` (log-target form) per position;
  * LoRA: eq. 3 of Hu et al. (2021), h = W₀x + (α/r)·BAx with B = 0 at initialisation;
  * greedy decoding: the argmax of the uncached stage 2.2 GPT, one token at a time.
Every model is a tiny, randomly initialised stage 2.2 GPT over a byte-level stage 2.1 tokenizer
(no merges), so each check runs in milliseconds.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared.loader import load_dep
from shared.testing import check, check_close, covers, declare_parts, depends_on, describe, expect_raises, fail, likely

SEP = "<|endoftext|>"
SEP_ID = 256
IGNORE = -100

declare_parts({
    "no separator after the prompt": "encode_chat",
    "no separator after the response": "encode_chat",
    "loss on the prompt too": "sft_batch",
    "the padding is labelled": "sft_batch",
    "SFT loss on the prompt too": "sft_step",
    "the reference shares parameters with the policy": "frozen_reference",
    "the reference is not frozen (requires_grad is True)": "frozen_reference",
    "log-probs averaged instead of summed": "response_logprobs",
    "log-probs summed over the prompt too": "response_logprobs",
    "log-probs not shifted": "response_logprobs",
    "chosen and rejected swapped (rows of the batch)": "dpo_batch",
    "chosen and rejected swapped (in the loss)": "dpo_step",
    "chosen and rejected swapped (in the accuracy)": "preference_accuracy",
    "beta applied twice": "dpo_step",
    "beta applied outside the logsigmoid": "dpo_step",
    "the reference model updated": "dpo_step",
    "ties counted as losses": "preference_accuracy",
    "KL in the wrong direction (reference against policy)": "kl_to_reference",
    "KL over the prompt positions too": "kl_to_reference",
    "the separator kept in the answer": "greedy_response",
    "LoRA B initialised non-zero": "LoRALinear",
    "LoRA update scaled by alpha instead of alpha / r": "LoRALinear",
    "LoRA update not scaled": "LoRALinear",
    "the base weights not frozen": "add_lora",
})  # fmt: skip

# ---------------------------------------------------------------- tiny fixtures


def tokenizer():
    """A byte-level stage 2.1 tokenizer (no merges) with <|endoftext|> = 256: one token per byte."""
    return load_dep("2.1").BPETokenizer({}, {SEP: SEP_ID})


def tiny_gpt(seed: int = 0, block_size: int = 64, d: int = 16, scale: float = 0.3) -> nn.Module:
    gpt = load_dep("2.2")
    torch.manual_seed(seed)
    model = gpt.GPT(gpt.GPTConfig(vocab_size=SEP_ID + 1, block_size=block_size, d_model=d, n_layers=1, n_heads=2))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # larger than GPT-2's 0.02: logits that differ clearly, argmax ties far away
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (scale if p.dim() > 1 else 0.1))
    return model


class SGD:
    """Plain SGD with the optimizer interface the steps use (torch.optim's first step imports torch._dynamo: slow)."""

    def __init__(self, params, lr: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr
        self.steps = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-self.lr)


def b(text: str) -> list[int]:
    return list(text.encode("utf-8"))


PAIRS = [("f a", "def f(a):"), ("get_x with arguments self, k", "def get_x(self, k):")]
TRIPLES = [("f a", "def f(a) -> None:", "def f(a):"), ("g b, c", "def g(b, c) -> None:", "def g(b, c):"),
           ("hh x", "def hh(x) -> None:", "def hh(x):")]  # fmt: skip


def ref_batch(pairs: Sequence[tuple[str, str]], *, mask_prompt: bool = True, label_padding: bool = False,
              prompt_sep: bool = True, response_sep: bool = True):  # fmt: skip
    """The chat-template batch by hand (or a mistake's): input_ids (B, T), labels (B, T)."""
    rows = []
    for p, r in pairs:
        pi = b(p) + ([SEP_ID] if prompt_sep else [])
        ri = b(r) + ([SEP_ID] if response_sep else [])
        rows.append((pi + ri, ([IGNORE] * len(pi) if mask_prompt else pi) + ri))
    T = max(len(i) for i, _ in rows)
    ids = torch.tensor([i + [SEP_ID] * (T - len(i)) for i, _ in rows])
    lab = torch.tensor([lab + ([SEP_ID] if label_padding else [IGNORE]) * (T - len(lab)) for _, lab in rows])
    return ids, lab


def ref_logps(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, *, mean: bool = False, shift: bool = True,
              all_tokens: bool = False) -> torch.Tensor:  # fmt: skip
    """Σ_t log_softmax(logits[t])[labels[t+1]] over response tokens (or a mistake's variant): (B,)."""
    with torch.no_grad():
        logits = model(ids)[0].float()
    lp = F.log_softmax(logits, dim=-1)
    if shift:
        lp, tgt = lp[:, :-1], labels[:, 1:]
        src = ids[:, 1:]
    else:
        tgt, src = labels, ids
    if all_tokens:  # every real (non-padding) position of prompt and response
        keep = torch.ones_like(src, dtype=torch.bool)
        for i in range(src.size(0)):
            n = int((labels[i] != IGNORE).nonzero().max()) + (0 if shift else 1)
            keep[i, n:] = False
        tgt = src
    else:
        keep = tgt != IGNORE
    tok = lp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
    s = tok.sum(-1)
    return s / keep.sum(-1) if mean else s


def dpo_ref(pc, pr, rc, rr, beta: float) -> torch.Tensor:
    """Rafailov et al. (2023) eq. 7, mean over the batch."""
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()


# ---------------------------------------------------------------- Task 1: the chat template


@covers("encode_chat")
def test_chat_template(impl) -> None:
    """encode_chat: prompt + <|endoftext|>, response + <|endoftext|>, special text kept plain"""
    tok = tokenizer()
    p, r = impl.encode_chat(tok, "hi <|endoftext|>", "def f(a):")
    check(isinstance(p, torch.Tensor) and isinstance(r, torch.Tensor), f"expected two tensors, got {describe(p)}, {describe(r)}")
    expected_p = b("hi <|endoftext|>") + [SEP_ID]
    check_close(p, torch.tensor(expected_p), what='encode_chat(tok, "hi <|endoftext|>", ...) prompt ids',
                reference="the template: encode(prompt) + [sep], the special string encoded as plain text",
                mistakes={"no separator after the prompt": torch.tensor(b("hi <|endoftext|>")),
                          "the prompt's '<|endoftext|>' text encoded as the special token": torch.tensor(b("hi ") + [SEP_ID, SEP_ID])})  # fmt: skip
    check_close(r, torch.tensor(b("def f(a):") + [SEP_ID]), what="encode_chat response ids",
                reference="encode(response) + [sep]",
                mistakes={"no separator after the response": torch.tensor(b("def f(a):"))})  # fmt: skip
    check(p.dtype == torch.long and r.dtype == torch.long, f"ids must be int64 (embedding indices), got {p.dtype}, {r.dtype}")
    p2, r2 = impl.encode_chat(tok, "hi")
    check(r2 is None, f"encode_chat(tok, prompt) with no response must return (prompt_ids, None), got {describe(r2)}")
    check_close(p2, torch.tensor(b("hi") + [SEP_ID]), what='encode_chat(tok, "hi") prompt ids')
    no_sep = load_dep("2.1").BPETokenizer({}, {"<|other|>": 256})
    expect_raises(ValueError, impl.encode_chat, no_sep, "hi", "yo", what="encode_chat with a tokenizer that has no <|endoftext|>")


# ---------------------------------------------------------------- Task 2: SFT batches


@covers("sft_batch")
@depends_on("encode_chat")
@pytest.mark.points(2)
def test_sft_batch_masks_the_prompt(impl) -> None:
    """sft_batch: labels -100 over the prompt and the padding, the response (and its separator) learned"""
    got = impl.sft_batch(tokenizer(), PAIRS)
    check(isinstance(got, tuple) and len(got) == 2, f"sft_batch returns (input_ids, labels), got {describe(got)}")
    ids, labels = got
    e_ids, e_lab = ref_batch(PAIRS)
    check_close(ids, e_ids, what="sft_batch input_ids (B, T)", reference="prompt + sep + response + sep, right-padded with sep")
    check_close(labels, e_lab, what="sft_batch labels (B, T)", reference="-100 on prompt, its separator and padding (0.1's sft_example / collate_sft)",
                mistakes={"loss on the prompt too": ref_batch(PAIRS, mask_prompt=False)[1],
                          "the padding is labelled": ref_batch(PAIRS, label_padding=True)[1]})  # fmt: skip


# ---------------------------------------------------------------- Task 3: one SFT step


def _sft_reference(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, lr: float, clip: float | None, prompt_too: bool = False):
    """The loss and the parameters after one SGD step of the response-only cross-entropy (or a mistake's)."""
    m = copy.deepcopy(model)
    logits = m(ids)[0].float()
    tgt = labels[:, 1:]
    if prompt_too:  # the plain language-model loss on input_ids: every token after the first, prompt and padding too
        tgt = ids[:, 1:]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=IGNORE)
    loss.backward()
    if clip is not None:
        nn.utils.clip_grad_norm_(list(m.parameters()), clip)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(p.grad, alpha=-lr)
    return float(loss.detach()), torch.cat([p.detach().flatten() for p in m.parameters()])


@covers("sft_step")
@depends_on("sft_batch")
@pytest.mark.points(2)
def test_sft_step(impl) -> None:
    """sft_step: the response-only loss, one optimizer step, gradients clipped"""
    ids, labels = ref_batch(PAIRS)
    for clip in (None, 0.05):
        model = tiny_gpt(1)
        exp_loss, exp_params = _sft_reference(model, ids, labels, 0.1, clip)
        mis_loss, mis_params = _sft_reference(model, ids, labels, 0.1, clip, prompt_too=True)
        opt = SGD(model.parameters(), lr=0.1)
        loss = impl.sft_step(model, opt, ids, labels, grad_clip=clip)
        check(isinstance(loss, float), f"sft_step returns the loss as a Python float, got {describe(loss)}")
        check_close(loss, exp_loss, what=f"sft_step loss (grad_clip={clip})", atol=1e-5,
                    reference="F.cross_entropy of logits[:, :-1] against labels[:, 1:], ignore_index=-100",
                    mistakes={"SFT loss on the prompt too": mis_loss})  # fmt: skip
        check(opt.steps == 1, f"sft_step must call optimizer.step() once, it was called {opt.steps} times")
        got = torch.cat([p.detach().flatten() for p in model.parameters()])
        check_close(got, exp_params, what=f"parameters after one SGD step (lr 0.1, grad_clip={clip})", atol=1e-5,
                    reference="the same step with torch.nn.utils.clip_grad_norm_" if clip else "loss.backward() then SGD")  # fmt: skip


# ---------------------------------------------------------------- Task 4: the frozen reference


@covers("frozen_reference")
@pytest.mark.points(2)
def test_reference_is_frozen(impl) -> None:
    """frozen_reference: its own tensors, no gradients, eval mode, unchanged when the policy trains"""
    policy = tiny_gpt(2)
    ref = impl.frozen_reference(policy)
    check(isinstance(ref, nn.Module) and ref is not policy, f"frozen_reference must return a new module, got {describe(ref)}")
    ptrs = {p.data_ptr() for p in policy.parameters()}
    shared = [n for n, p in ref.named_parameters() if p.data_ptr() in ptrs]
    check(not shared, f"{len(shared)} reference parameters share memory with the policy ({shared[:3]}): training the policy "
                      "would move the reference too; make a deep copy" + likely("the reference shares parameters with the policy"))  # fmt: skip
    grad = [n for n, p in ref.named_parameters() if p.requires_grad]
    check(not grad, f"{len(grad)} reference parameters still have requires_grad=True ({grad[:3]}): set it to False on every one"
                    + likely("the reference is not frozen (requires_grad is True)"))  # fmt: skip
    check(not ref.training, "the reference must be in eval mode (ref.training is True): dropout would make its log-probs random")
    ids = torch.tensor([b("def f(a):")])
    before = ref(ids)[0].detach().clone()
    check_close(before, policy(ids)[0].detach(), what="reference logits vs the policy's at the start", atol=1e-6)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.5)
    check_close(ref(ids)[0].detach(), before, what="reference logits after changing the policy's weights", atol=1e-6,
                reference="unchanged: the reference is a separate, frozen copy")  # fmt: skip


# ---------------------------------------------------------------- Task 5: response log-probs


@covers("response_logprobs")
@pytest.mark.points(2)
def test_response_logprobs_summed(impl) -> None:
    """response_logprobs: log π(y|x) summed over the response tokens only, shifted by one"""
    model = tiny_gpt(3).eval()
    ids, labels = ref_batch(PAIRS)
    got = impl.response_logprobs(model, ids, labels)
    check_close(got, ref_logps(model, ids, labels), what="response_logprobs (B,)", atol=1e-4,
                reference="log_softmax + gather, summed over positions predicting a response token",
                mistakes={"log-probs averaged instead of summed": lambda: ref_logps(model, ids, labels, mean=True),
                          "log-probs summed over the prompt too": lambda: ref_logps(model, ids, labels, all_tokens=True),
                          "log-probs not shifted": lambda: ref_logps(model, ids, labels, shift=False)})  # fmt: skip
    logits_grad = []
    m = tiny_gpt(3)
    out = impl.response_logprobs(m, ids, labels)
    check(out.requires_grad, "response_logprobs must keep the graph (DPO differentiates through it): do not detach or use no_grad")
    del logits_grad


# ---------------------------------------------------------------- Task 6: DPO batches


@covers("dpo_batch")
@depends_on("sft_batch")
def test_dpo_batch_rows(impl) -> None:
    """dpo_batch: chosen rows first, then the rejected ones, prompt masked, one padding length"""
    got = impl.dpo_batch(tokenizer(), TRIPLES)
    check(isinstance(got, tuple) and len(got) == 2, f"dpo_batch returns (input_ids, labels), got {describe(got)}")
    ids, labels = got
    pairs = [(p, c) for p, c, _ in TRIPLES] + [(p, r) for p, _, r in TRIPLES]
    swapped = [(p, r) for p, _, r in TRIPLES] + [(p, c) for p, c, _ in TRIPLES]
    e_ids, e_lab = ref_batch(pairs)
    check_close(ids, e_ids, what="dpo_batch input_ids (2B, T)", reference="rows 0..B-1 chosen, B..2B-1 rejected",
                mistakes={"chosen and rejected swapped (rows of the batch)": ref_batch(swapped)[0]})  # fmt: skip
    check_close(labels, e_lab, what="dpo_batch labels (2B, T)", mistakes={"loss on the prompt too": ref_batch(pairs, mask_prompt=False)[1]})


# ---------------------------------------------------------------- Task 7: the DPO step


def _dpo_fixture():
    policy, reference = tiny_gpt(5), tiny_gpt(6)  # margins of both signs: [0.11, -0.44, 0.62]
    reference.requires_grad_(False)
    ids, labels = ref_batch([(p, c) for p, c, _ in TRIPLES] + [(p, r) for p, _, r in TRIPLES])
    return policy, reference, ids, labels


@covers("dpo_step")
@depends_on("response_logprobs")
@pytest.mark.points(3)
def test_dpo_step_loss_matches_the_paper(impl) -> None:
    """dpo_step: the loss equals eq. 7 of the DPO paper on fixed inputs; only the policy moves"""
    policy, reference, ids, labels = _dpo_fixture()
    B, beta = len(TRIPLES), 0.5
    pl, rl = ref_logps(policy, ids, labels), ref_logps(reference, ids, labels)
    pm, rm = ref_logps(policy, ids, labels, mean=True), ref_logps(reference, ids, labels, mean=True)
    z = (pl[:B] - rl[:B]) - (pl[B:] - rl[B:])  # (B,)
    mistakes = {
        "chosen and rejected swapped (in the loss)": dpo_ref(pl[B:], pl[:B], rl[B:], rl[:B], beta),
        "beta applied twice": -F.logsigmoid(beta * beta * z).mean(),
        "beta applied outside the logsigmoid": -beta * F.logsigmoid(z).mean(),
        "log-probs averaged instead of summed": dpo_ref(pm[:B], pm[B:], rm[:B], rm[B:], beta),
    }
    ref_before = [p.detach().clone() for p in reference.parameters()]
    reference.requires_grad_(True)  # a learner's reference that is not frozen would get gradients here: catch them
    opt = SGD(policy.parameters(), lr=0.05)
    out = impl.dpo_step(policy, reference, opt, ids, labels, beta=beta)
    check(isinstance(out, dict) and {"loss", "margin", "accuracy"} <= set(out),
          f"dpo_step returns a dict with loss, margin, accuracy; got {describe(out)}")  # fmt: skip
    check_close(out["loss"], dpo_ref(pl[:B], pl[B:], rl[:B], rl[B:], beta), what=f"dpo_step loss (beta={beta})", atol=1e-5,
                reference="Rafailov et al. 2023 eq. 7: -logsigmoid(beta * ((pi_w - ref_w) - (pi_l - ref_l))), mean",
                mistakes=mistakes)  # fmt: skip
    check_close(out["margin"], float((beta * z).mean()), what="dpo_step margin (mean of beta * ((pi_w - ref_w) - (pi_l - ref_l)), before the step)",
                atol=1e-5, mistakes={"chosen and rejected swapped (in the loss)": float((-beta * z).mean())})  # fmt: skip
    check_close(out["accuracy"], float((z > 0).float().mean()), what="dpo_step accuracy (fraction of margins > 0)", atol=1e-6)
    grads = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in reference.parameters()]
    check(not any(grads), "the reference got gradients in dpo_step: compute its log-probs under torch.no_grad()"
                          + likely("the reference model updated"))  # fmt: skip
    moved = max(float((a - p.detach()).abs().max()) for a, p in zip(ref_before, reference.parameters(), strict=False))
    check(moved == 0.0, f"the reference's weights changed by up to {moved:.3g} in dpo_step" + likely("the reference model updated"))
    check(opt.steps == 1, f"dpo_step must call optimizer.step() once, it was called {opt.steps} times")


@depends_on("dpo_step", "frozen_reference", "dpo_batch")
@pytest.mark.points(2)
def test_preference_margin_rises(impl) -> None:
    """DPO learns: on a tiny set the preference margin rises and every pair is preferred within 30 steps"""
    torch.manual_seed(0)
    policy = tiny_gpt(6, scale=0.1)
    reference = impl.frozen_reference(policy)
    ids, labels = impl.dpo_batch(tokenizer(), TRIPLES)
    B = len(TRIPLES)
    opt = SGD(policy.parameters(), lr=0.5)
    margins = []
    for _ in range(30):
        impl.dpo_step(policy, reference, opt, ids, labels, beta=0.5)
        pl, rl = ref_logps(policy, ids, labels), ref_logps(reference, ids, labels)
        margins.append((pl[:B] - rl[:B]) - (pl[B:] - rl[B:]))
    final = margins[-1]
    check(float(final.mean()) > float(margins[0].mean()) and bool((final > 0).all()),
          f"after 30 DPO steps (SGD lr 0.5, beta 0.5) the log-ratio margins per pair are {[round(float(x), 3) for x in final]},"
          f" mean {float(final.mean()):.3g} (after the first step: {float(margins[0].mean()):.3g}); expected every margin > 0 and rising."
          " The margin falls when chosen and rejected are swapped; it stays at 0 when the reference moves with the policy.")  # fmt: skip


# ---------------------------------------------------------------- Task 8: evaluation


@covers("preference_accuracy", "kl_to_reference")
@depends_on("response_logprobs")
@pytest.mark.points(2)
def test_preference_accuracy_and_kl(impl) -> None:
    """preference_accuracy (ties count half) and kl_to_reference (the exact KL on response positions)"""
    policy, reference, ids, labels = _dpo_fixture()
    policy.eval()
    reference.eval()
    B = len(TRIPLES)
    pl, rl = ref_logps(policy, ids, labels), ref_logps(reference, ids, labels)
    z = (pl[:B] - rl[:B]) - (pl[B:] - rl[B:])
    check(0 < int((z > 0).sum()) < B, "course bug: the probe needs both signs")
    acc = impl.preference_accuracy(policy, reference, ids, labels)
    check_close(acc, float((z > 0).float().mean()), what="preference_accuracy", atol=1e-6,
                mistakes={"chosen and rejected swapped (in the accuracy)": float((z < 0).float().mean())})  # fmt: skip
    tie = impl.preference_accuracy(reference, reference, ids, labels)
    check_close(tie, 0.5, what="preference_accuracy of the reference against itself (every margin exactly 0)", atol=1e-6,
                mistakes={"ties counted as losses": 0.0})  # fmt: skip
    with torch.no_grad():
        lp = F.log_softmax(policy(ids)[0][:, :-1].float(), -1)
        lq = F.log_softmax(reference(ids)[0][:, :-1].float(), -1)
    keep = labels[:, 1:] != IGNORE
    every = (labels[:, 1:] != IGNORE) | (ids[:, 1:] != SEP_ID) | (torch.arange(ids.size(1) - 1) < 2)
    kl_pos = F.kl_div(lq, lp, log_target=True, reduction="none").sum(-1)  # KL(p || q) per position
    kl_rev = F.kl_div(lp, lq, log_target=True, reduction="none").sum(-1)
    kl = impl.kl_to_reference(policy, reference, ids, labels)
    check_close(kl, float((kl_pos * keep).sum(-1).mean()), what="kl_to_reference (nats per response)", atol=1e-4, rtol=1e-4,
                reference="torch.nn.functional.kl_div(log q, log p, log_target=True) summed over response positions, mean over rows",
                mistakes={"KL in the wrong direction (reference against policy)": float((kl_rev * keep).sum(-1).mean()),
                          "KL over the prompt positions too": float((kl_pos * every).sum(-1).mean())})  # fmt: skip
    same = impl.kl_to_reference(reference, reference, ids, labels)
    check_close(same, 0.0, what="kl_to_reference of a model against itself", atol=1e-5)


def ref_greedy(model: nn.Module, prompt_ids: list[int], n: int) -> list[int]:
    ids = list(prompt_ids)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids]))[0][0, -1].argmax())
            if nxt == SEP_ID:
                break
            ids.append(nxt)
            out.append(nxt)
    return out


@covers("greedy_response")
@depends_on("encode_chat")
def test_greedy_response(impl) -> None:
    """greedy_response: the argmax answer after prompt + separator, cut at the separator"""
    tok = tokenizer()
    for seed in range(12):  # a model whose greedy answer ends with the separator within 8 tokens, and one that does not
        model = tiny_gpt(10 + seed).eval()
        toks = ref_greedy(model, b("f a") + [SEP_ID], 8)
        if len(toks) < 8:
            break
    got = impl.greedy_response(model, tok, "f a", max_new_tokens=8)
    check(isinstance(got, str), f"greedy_response returns the answer's text, got {describe(got)}")
    exp = tok.decode(toks)
    if got != exp:
        names = []
        if got == tok.decode(toks + [SEP_ID]):
            names.append("the separator kept in the answer")
        fail(f"greedy_response(model, tok, 'f a', max_new_tokens=8): expected {exp!r}, got {got!r}"
             f" (reference: argmax of the uncached GPT after the prompt ids + [sep], stopping at sep)" + likely(*names))  # fmt: skip


# ---------------------------------------------------------------- Task 9: LoRA


@covers("LoRALinear")
@pytest.mark.points(2)
def test_lora_zero_at_init_then_scaled(impl) -> None:
    """LoRALinear: output unchanged at initialisation (B = 0), then base(x) + (alpha / r) x A^T B^T"""
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    x = torch.randn(2, 3, 6)
    expected = base(x).detach()
    lora = impl.LoRALinear(base, r=2, alpha=6.0)
    y = lora(x)
    check(tuple(lora.lora_A.shape) == (2, 6) and tuple(lora.lora_B.shape) == (5, 2),
          f"lora_A must be (r, in_features) = (2, 6) and lora_B (out_features, r) = (5, 2); got {tuple(lora.lora_A.shape)}, {tuple(lora.lora_B.shape)}")  # fmt: skip
    b_nonzero = bool(lora.lora_B.detach().abs().sum() > 0)
    check_close(y, expected, what="LoRALinear(base, r=2, alpha=6)(x) at initialisation", atol=1e-6,
                reference="base(x): B = 0 makes the update zero (Hu et al. 2021 §4.1)",
                mistakes={"LoRA B initialised non-zero": y.detach()} if b_nonzero else None)  # fmt: skip
    check(float(lora.lora_A.detach().abs().sum()) > 0, "lora_A must be random (kaiming-uniform), not zero: with A = 0 and B = 0 neither gets a gradient")
    with torch.no_grad():
        lora.lora_A.copy_(torch.randn(2, 6))
        lora.lora_B.copy_(torch.randn(5, 2))
    upd = x @ lora.lora_A.detach().t() @ lora.lora_B.detach().t()
    check_close(lora(x), expected + 3.0 * upd, what="LoRALinear output with A, B set", atol=1e-5,
                reference="base(x) + (alpha / r) * x A^T B^T, alpha / r = 3",
                mistakes={"LoRA update scaled by alpha instead of alpha / r": expected + 6.0 * upd,
                          "LoRA update not scaled": expected + upd})  # fmt: skip
    frozen = [n for n, p in lora.base.named_parameters() if p.requires_grad]
    check(not frozen, f"the wrapped layer's {frozen} still require gradients: freeze the base weight and bias")


@covers("add_lora")
@depends_on("LoRALinear")
@pytest.mark.points(2)
def test_only_adapters_train(impl) -> None:
    """add_lora: only the adapters are trainable, the fraction is reported, a step moves only them"""
    model = tiny_gpt(7)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.tensor([b("def f(a):")])
    out0 = model(ids)[0].detach()
    frac = impl.add_lora(model, r=2, alpha=4.0, targets=("attn",))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    lora_names = {n for n in names if "lora_" in n}
    other = sorted(names - lora_names)
    check(not other, f"{len(other)} non-adapter parameters are trainable after add_lora ({other[:3]})" + likely("the base weights not frozen"))
    expected_lora = 4 * 2 * (2 * 16)  # q, k, v, out: A (2, 16) and B (16, 2) each, one block
    n_lora = sum(p.numel() for n, p in model.named_parameters() if n in lora_names)
    check(n_lora == expected_lora, f"expected {expected_lora} adapter parameters (A and B on q/k/v/out_proj of 1 block, r=2), got {n_lora} in {sorted(lora_names)[:4]}")
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    check_close(frac, expected_lora / total, what="add_lora's trainable fraction", atol=1e-9,
                reference="trainable / all parameters, each tensor once, after adding the adapters")  # fmt: skip
    check_close(model(ids)[0].detach(), out0, what="the model's logits right after add_lora", atol=1e-5)
    opt = SGD(model.parameters(), lr=0.1)
    loss = model(ids)[0].float().logsumexp(-1).mean() - model(ids)[0][0, :, 0].mean()
    loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        if "lora_" in n:
            continue
        key = n.replace(".base.", ".")
        check(key in before and torch.equal(p.detach(), before[key]), f"{n} changed in a step after add_lora: only the adapters may train")


# ---------------------------------------------------------------- devices and precision


@depends_on("response_logprobs")
def test_logprobs_on_every_device_and_precision(impl, setting) -> None:
    """response_logprobs on every device and precision"""
    model = tiny_gpt(8).eval()
    ids, labels = ref_batch(PAIRS)
    expected = ref_logps(model, ids, labels)
    m = setting.module(model)
    with setting.autocast():
        got = impl.response_logprobs(m, setting.tensor(ids), setting.tensor(labels))
    setting.sync()
    check(got.device.type == setting.device, f"log-probs on {got.device}, expected {setting.device}")
    tol = setting.tol
    check_close(got.float().cpu(), expected, what=f"response_logprobs on {setting.id}", reference="float32 on the CPU",
                atol=max(tol.get("atol", 1e-5) * 40, 1e-4), rtol=max(tol.get("rtol", 1e-4), 1e-4))  # fmt: skip
