"""Graded checks for stage 0.1 — the training pipeline as objectives in code.

Reference numerics: ``torch.nn.functional.cross_entropy`` (with ``ignore_index=-100``) for the
language-modelling losses and the response log-probabilities; ``torch.nn.functional.logsigmoid``
for the Bradley–Terry loss and for DPO, eq. 7 of Rafailov et al. (2023), "Direct Preference
Optimization"; autograd of those formulas for the gradient checks; hand-computed values
(log V for a uniform model, log 2 for equal rewards) where a number can be worked out on paper.
Tensors are written out by hand, so the checks do not depend on how the learner lays out their code.

The convention the checks hold the learner to (the lesson states it):
  ``targets`` (make_lm_pairs, lm_loss) are already shifted: targets[t] follows inputs[t];
  ``labels`` (sft_example, collate_sft, sft_loss, sequence_logprob) are aligned with the input ids,
  and the shift happens inside sft_loss and sequence_logprob.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from shared.testing import check, check_close, expect_raises, fail

IGNORE = -100


# ---------------------------------------------------------------- trusted references and named mistakes


def ce_mean(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over kept positions: torch's own, logits (B, T, V) against targets (B, T)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE)


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at each position, 0 where the target is ignored: (B, T, V), (B, T) -> (B, T)."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")  # (B, T)
    return -nll


def seq_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The reference log π(response): logits[t] scored against labels[t + 1], summed over kept tokens -> (B,)."""
    return token_logps(logits[:, :-1], labels[:, 1:]).sum(dim=-1)


def clamped_not_masked(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mistake of clamping -100 to token 0 and keeping those positions: per-position log p, (B, T)."""
    return token_logps(logits, targets.clamp(min=0))


def dpo_formula(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, beta: float) -> torch.Tensor:
    """Rafailov et al. (2023), eq. 7, mean over the batch."""
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()


def dpo_mistakes(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, beta: float) -> dict:
    margin = (pc - rc) - (pr - rr)
    return {
        "the DPO sign flipped (rejected minus chosen inside σ, or log π_ref − log π)": -F.logsigmoid(
            -beta * margin
        ).mean(),
        "missing minus: log σ(...) instead of −log σ(...)": F.logsigmoid(beta * margin).mean(),
        "β forgotten (σ of the raw log-ratio difference)": -F.logsigmoid(margin).mean(),
        "the reference model left out (no log π_ref terms)": -F.logsigmoid(beta * (pc - pr)).mean(),
        "summed over the batch instead of averaged": -F.logsigmoid(beta * margin).sum(),
        "β outside the logsigmoid (β · −log σ(margin) instead of −log σ(β · margin))": beta * -F.logsigmoid(margin).mean(),
    }


# ---------------------------------------------------------------- Task 1: make_lm_pairs

STREAM = torch.arange(100, 111)  # (11,) distinct ids, so every window is recognisable


def windows(tokens: torch.Tensor, T: int, starts: list[int], shift: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets cut by hand at the given window starts."""
    inputs = torch.stack([tokens[s : s + T] for s in starts])  # (M, T)
    targets = torch.stack([tokens[s + shift : s + shift + T] for s in starts])  # (M, T)
    return inputs, targets


@pytest.mark.points(2)
def test_lm_pairs_targets_are_inputs_shifted_by_one(impl) -> None:
    """make_lm_pairs: targets[t] is the token that follows inputs[t]"""
    inputs, targets = impl.make_lm_pairs(STREAM, 4)
    exp_in, exp_tg = windows(STREAM, 4, [0, 4])
    check(isinstance(targets, torch.Tensor), f"make_lm_pairs must return two tensors, got {type(targets).__name__}")
    check(targets.dtype == STREAM.dtype, f"targets should keep the stream's dtype {STREAM.dtype}, got {targets.dtype}")
    check_close(
        targets,
        exp_tg,
        what="targets of make_lm_pairs(arange(100, 111), context_len=4)",
        reference="tokens[s + 1 : s + 5] for window starts s = 0, 4",
        mistakes={
            "targets not shifted (targets == inputs)": exp_in,
            "targets shifted by context_len instead of by one": lambda: windows(STREAM, 4, [0, 4], shift=4)[1],
        },
    )
    check_close(
        inputs,
        exp_in,
        what="inputs of make_lm_pairs(arange(100, 111), context_len=4)",
        reference="tokens[s : s + 4] for window starts s = 0, 4",
        mistakes={"inputs and targets swapped": exp_tg},
    )


def test_lm_pairs_stride(impl) -> None:
    """make_lm_pairs: windows start every `stride` tokens, and every window that fits is used"""
    inputs, targets = impl.make_lm_pairs(STREAM, 4, stride=2)
    exp_in, exp_tg = windows(STREAM, 4, [0, 2, 4, 6])  # the last one reads tokens 6..10: it just fits
    check_close(
        inputs,
        exp_in,
        what="inputs of make_lm_pairs(arange(100, 111), context_len=4, stride=2)",
        reference="window starts 0, 2, 4, 6 (start 6 reads tokens 6..10, the last that fits)",
        mistakes={
            "the last full window dropped (off by one in the window count)": exp_in[:3],
            "stride ignored (windows start every context_len tokens)": windows(STREAM, 4, [0, 4])[0],
            "windows start every stride + 1 tokens (off by one in the stride)": windows(STREAM, 4, [0, 3, 6])[0],
        },
    )
    check_close(
        targets,
        exp_tg,
        what="targets of make_lm_pairs(arange(100, 111), context_len=4, stride=2)",
        mistakes={"targets not shifted (targets == inputs)": exp_in},
    )


def test_lm_pairs_stream_too_short_raises(impl) -> None:
    """make_lm_pairs: a stream shorter than context_len + 1 raises ValueError"""
    expect_raises(
        ValueError,
        impl.make_lm_pairs,
        torch.arange(4),
        4,
        what="make_lm_pairs(arange(4), context_len=4) (4 inputs need a 5th token as the last target)",
    )
    expect_raises(
        ValueError,
        impl.make_lm_pairs,
        torch.arange(3),
        8,
        what="make_lm_pairs(arange(3), context_len=8) (the context is longer than the stream)",
    )
    inputs, targets = impl.make_lm_pairs(torch.arange(5), 4)
    check(
        tuple(inputs.shape) == (1, 4) and tuple(targets.shape) == (1, 4),
        f"make_lm_pairs(arange(5), context_len=4) has exactly one window, expected shapes (1, 4);"
        f" got {tuple(inputs.shape)} and {tuple(targets.shape)}",
    )


# ---------------------------------------------------------------- Task 2: lm_loss


def _lm_batch() -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.randn(2, 5, 7) * 2  # (B, T, V)
    targets = torch.tensor([[3, 0, IGNORE, 6, 2], [IGNORE, IGNORE, 1, 5, 4]])  # (B, T)
    return logits, targets


@pytest.mark.points(2)
def test_lm_loss_matches_cross_entropy(impl) -> None:
    """lm_loss equals F.cross_entropy over every kept position (ignore_index=-100), no shift"""
    logits, targets = _lm_batch()
    got = impl.lm_loss(logits, targets)
    check(
        isinstance(got, torch.Tensor) and got.dim() == 0,
        f"lm_loss must return a scalar tensor, got {getattr(got, 'shape', got)}",
    )
    per_pos = -clamped_not_masked(logits, targets)  # (B, T)
    check_close(
        got,
        ce_mean(logits, targets),
        what="lm_loss on logits (2, 5, 7), targets (2, 5) with three -100s",
        reference="F.cross_entropy(..., ignore_index=-100)",
        mistakes={
            "ignored positions counted in the mean (divided by all B*T positions)": lambda: (
                (-token_logps(logits, targets)).sum() / targets.numel()
            ),
            "ignore index not respected (-100 clamped to token 0 and counted)": per_pos.mean(),
            "summed instead of averaged over positions": lambda: (-token_logps(logits, targets)).sum(),
            "logits shifted inside lm_loss (make_lm_pairs already shifted the targets)": lambda: ce_mean(
                logits[:, :-1], targets[:, 1:]
            ),
            "log_softmax over the time axis instead of the vocabulary": lambda: F.nll_loss(
                F.log_softmax(logits, dim=1).reshape(-1, 7), targets.reshape(-1), ignore_index=IGNORE
            ),
        },
    )


def test_lm_loss_hand_values(impl) -> None:
    """lm_loss by hand: log V for a uniform model, log(1 + 2e^-2) for logits [2, 0, 0]"""
    V = 6
    uniform = impl.lm_loss(torch.zeros(2, 3, V), torch.tensor([[0, 5, 2], [1, IGNORE, 3]]))
    check_close(
        uniform,
        math.log(V),
        what="lm_loss of all-zero logits (every token has probability 1/6)",
        reference="log V = log 6 ≈ 1.7918",
        mistakes={
            "probabilities instead of log-probabilities (softmax, not log_softmax)": -1.0 / V,
            "ignored positions counted in the mean (divided by all B*T positions)": math.log(V) * 5 / 6,
        },
    )
    one = impl.lm_loss(torch.tensor([[[2.0, 0.0, 0.0]]]), torch.tensor([[0]]))
    check_close(
        one,
        math.log(1 + 2 * math.exp(-2)),
        what="lm_loss of logits [[[2, 0, 0]]] with target 0",
        reference="-log(e^2 / (e^2 + 2)) = log(1 + 2e^-2) ≈ 0.2395",
        mistakes={
            "the sign dropped (log p instead of -log p)": -math.log(1 + 2 * math.exp(-2)),
            "the raw logit instead of the log-probability": -2.0,
            "probabilities instead of log-probabilities (softmax, not log_softmax)": -math.exp(2) / (math.exp(2) + 2),
        },
    )


def test_lm_loss_ignores_masked_positions(impl) -> None:
    """lm_loss: logits at ignored positions change nothing and get no gradient"""
    logits, targets = _lm_batch()
    base = impl.lm_loss(logits, targets)
    noisy = logits.clone()
    noisy[targets == IGNORE] = torch.randn(int((targets == IGNORE).sum()), 7) * 50  # garbage where nothing is learned
    noisy.requires_grad_(True)
    loss = impl.lm_loss(noisy, targets)
    check_close(
        loss.detach(),
        base.detach(),
        what="lm_loss after replacing the logits at ignored (-100) positions",
        reference="the loss with the original logits: ignored positions must not count",
        mistakes={
            "ignore index not respected (-100 clamped to token 0 and counted)": (
                -clamped_not_masked(noisy.detach(), targets)
            ).mean()
        },
    )
    loss.backward()
    check(
        noisy.grad is not None,
        "lm_loss is not differentiable with respect to the logits (did you detach or use .item()?)",
    )
    leaked = noisy.grad[targets == IGNORE].abs().max()
    check(
        float(leaked) == 0.0,
        f"ignored (-100) positions received a gradient (largest {float(leaked):.3g}): they must count for nothing",
    )


# ---------------------------------------------------------------- Task 3: sft_example


@pytest.mark.points(2)
def test_sft_example_masks_the_prompt(impl) -> None:
    """sft_example: labels are -100 over the prompt and the response ids over the response"""
    prompt, response = torch.tensor([5, 6, 7]), torch.tensor([8, 9])
    input_ids, labels = impl.sft_example(prompt, response)
    full = torch.tensor([5, 6, 7, 8, 9])
    check_close(
        input_ids, full, what="input_ids of sft_example([5, 6, 7], [8, 9])", reference="prompt followed by response"
    )
    check(labels.dtype == torch.long, f"labels must be integer ids (torch.long) for cross-entropy, got {labels.dtype}")
    check_close(
        labels,
        torch.tensor([IGNORE, IGNORE, IGNORE, 8, 9]),
        what="labels of sft_example([5, 6, 7], [8, 9])",
        reference="-100 over the prompt, the response ids over the response, aligned with input_ids",
        mistakes={
            "loss over prompt tokens (prompt not masked with -100)": full,
            "labels already shifted here (the shift belongs in sft_loss / sequence_logprob)": torch.tensor(
                [IGNORE, IGNORE, 8, 9]
            ),
            "labels already shifted here, padded back to length (the shift belongs in sft_loss / sequence_logprob)": (
                torch.tensor([IGNORE, IGNORE, 8, 9, IGNORE])
            ),
            "the response masked instead of the prompt": torch.tensor([5, 6, 7, IGNORE, IGNORE]),
        },
    )


def test_sft_example_empty_parts_raise(impl) -> None:
    """sft_example: an empty response (or an empty prompt) raises ValueError"""
    empty = torch.tensor([], dtype=torch.long)
    expect_raises(
        ValueError,
        impl.sft_example,
        torch.tensor([1, 2]),
        empty,
        what="sft_example(prompt=[1, 2], response=[]) (nothing to learn)",
        match="response",
    )
    expect_raises(
        ValueError,
        impl.sft_example,
        empty,
        torch.tensor([3, 4]),
        what="sft_example(prompt=[], response=[3, 4]) (nothing before the first response token to predict it from)",
        match="prompt",
    )


# ---------------------------------------------------------------- Task 4: collate_sft

PAD = 99
EXAMPLES = [
    (torch.tensor([1, 2, 3]), torch.tensor([IGNORE, 2, 3])),
    (torch.tensor([4, 5]), torch.tensor([IGNORE, 5])),
    (torch.tensor([6, 7, 8, 9]), torch.tensor([IGNORE, IGNORE, 8, 9])),
]


@pytest.mark.points(2)
def test_collate_pads_on_the_right(impl) -> None:
    """collate_sft: right padding with pad_id, labels -100 and padding_mask True at the padding"""
    input_ids, labels, padding_mask = impl.collate_sft(EXAMPLES, PAD)
    P = PAD
    exp_ids = torch.tensor([[1, 2, 3, P], [4, 5, P, P], [6, 7, 8, 9]])
    exp_labels = torch.tensor([[IGNORE, 2, 3, IGNORE], [IGNORE, 5, IGNORE, IGNORE], [IGNORE, IGNORE, 8, 9]])
    exp_mask = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 1], [0, 0, 0, 0]])  # 1 = padding (blocked)
    check_close(
        input_ids,
        exp_ids,
        what=f"input_ids of collate_sft(3 examples of lengths 3, 2, 4, pad_id={PAD})",
        reference="each row then pad_id on the right",
        mistakes={
            "left padding instead of right padding": torch.tensor([[P, 1, 2, 3], [P, P, 4, 5], [6, 7, 8, 9]]),
            "padded with 0 instead of pad_id": torch.where(exp_ids == P, torch.zeros_like(exp_ids), exp_ids),
            "padded with -100 instead of pad_id (-100 is for labels only)": torch.where(
                exp_ids == P, torch.full_like(exp_ids, IGNORE), exp_ids
            ),
        },
    )
    check_close(
        labels,
        exp_labels,
        what="labels of collate_sft",
        reference="each row's labels then -100",
        mistakes={
            "padding counted in the loss (padded labels are pad_id, not -100)": torch.where(
                exp_mask.bool(), torch.full_like(exp_labels, P), exp_labels
            ),
            "padding counted in the loss (padded labels are 0, not -100)": torch.where(
                exp_mask.bool(), torch.zeros_like(exp_labels), exp_labels
            ),
            "left padding instead of right padding": torch.tensor(
                [[IGNORE, IGNORE, 2, 3], [IGNORE, IGNORE, IGNORE, 5], [IGNORE, IGNORE, 8, 9]]
            ),
        },
    )
    check(
        padding_mask.dtype == torch.bool,
        f"padding_mask must be a bool tensor (True = padding), got {padding_mask.dtype}",
    )
    check_close(
        padding_mask.long(),
        exp_mask,
        what="padding_mask of collate_sft (as 0/1)",
        reference="True (1) at padded positions: the course's convention, True = blocked",
        mistakes={
            "padding mask inverted (True must mark padding: blocked, as in nn.MultiheadAttention)": 1 - exp_mask,
            "left padding instead of right padding": exp_mask.flip(-1),
        },
    )


# ---------------------------------------------------------------- Task 5: sft_loss

SFT_LABELS = torch.tensor([[IGNORE, IGNORE, 3, 1, 4, IGNORE], [IGNORE, 2, 0, IGNORE, IGNORE, IGNORE]])  # (2, 6)


@pytest.mark.points(2)
def test_sft_loss_shifts_and_ignores(impl) -> None:
    """sft_loss: logits at t are scored against labels[t + 1], mean over response tokens only"""
    logits = torch.randn(2, 6, 5) * 2  # (B, T, V) from input_ids (B, T)
    got = impl.sft_loss(logits, SFT_LABELS)
    check(
        isinstance(got, torch.Tensor) and got.dim() == 0,
        f"sft_loss must return a scalar tensor, got {getattr(got, 'shape', got)}",
    )
    check_close(
        got,
        ce_mean(logits[:, :-1], SFT_LABELS[:, 1:]),
        what="sft_loss on logits (2, 6, 5) and labels (2, 6)",
        reference="F.cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index=-100)",
        mistakes={
            "logits not shifted (logits at t scored against the label at t)": ce_mean(logits, SFT_LABELS),
            "shifted the wrong way (logits[:, 1:] against labels[:, :-1])": ce_mean(logits[:, 1:], SFT_LABELS[:, :-1]),
            "ignored positions counted in the mean (divided by all B*T positions)": lambda: (
                (-token_logps(logits[:, :-1], SFT_LABELS[:, 1:])).sum() / SFT_LABELS[:, 1:].numel()
            ),
        },
    )


# ---------------------------------------------------------------- Task 6: sequence_logprob

LP_LABELS = torch.tensor(
    [  # (3, 7): prompt (-100), response, padding (-100)
        [IGNORE, IGNORE, 4, 0, 2, IGNORE, IGNORE],
        [IGNORE, IGNORE, IGNORE, 1, 1, 3, 2],
        [IGNORE, 3, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE],
    ]
)


def logprob_mistakes(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    kept = (labels[:, 1:] != IGNORE).sum(dim=-1)
    return {
        "log-probabilities averaged instead of summed": lambda: seq_logprob(logits, labels) / kept,
        "logits not shifted (logits at t scored against the label at t)": lambda: token_logps(logits, labels).sum(-1),
        "shifted the wrong way (logits[:, 1:] against labels[:, :-1])": lambda: token_logps(
            logits[:, 1:], labels[:, :-1]
        ).sum(-1),
        "masked positions (-100) counted (clamped to token 0 instead of skipped)": lambda: clamped_not_masked(
            logits[:, :-1], labels[:, 1:]
        ).sum(-1),
        "the sign dropped (negative log-likelihood instead of log-probability)": lambda: -seq_logprob(logits, labels),
    }


@pytest.mark.points(2)
def test_sequence_logprob_matches_reference(impl) -> None:
    """sequence_logprob: the SUM of log p(labels[t + 1] | logits[t]) over the response, per row"""
    logits = torch.randn(3, 7, 5) * 2
    got = impl.sequence_logprob(logits, LP_LABELS)
    check(
        isinstance(got, torch.Tensor) and tuple(got.shape) == (3,),
        "sequence_logprob(logits (3, 7, 5), labels (3, 7)) must return shape (3,), one number per row;"
        f" got {getattr(got, 'shape', got)}",
    )
    check_close(
        got,
        seq_logprob(logits, LP_LABELS),
        what="sequence_logprob on logits (3, 7, 5), labels (3, 7)",
        reference="-F.cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index=-100, reduction='none').sum(-1)",
        mistakes=logprob_mistakes(logits, LP_LABELS),
    )


def test_sequence_logprob_uniform_model(impl) -> None:
    """sequence_logprob: a uniform model gives -(number of response tokens) * log V"""
    V = 5
    got = impl.sequence_logprob(torch.zeros(3, 7, V), LP_LABELS)
    n = (LP_LABELS[:, 1:] != IGNORE).sum(-1).double()  # response tokens per row: 3, 4, 1
    check_close(
        got,
        -n * math.log(V),
        what="sequence_logprob of all-zero logits (each token has probability 1/5)",
        reference="-(3, 4, 1) * log 5",
        mistakes={
            "log-probabilities averaged instead of summed": -torch.full((3,), math.log(V)),
            "the sign dropped (negative log-likelihood instead of log-probability)": n * math.log(V),
        },
    )


def test_sequence_logprob_gradient_only_where_predicting_response(impl) -> None:
    """sequence_logprob: only positions that predict a response token get a gradient"""
    logits = (torch.randn(3, 7, 5) * 2).requires_grad_(True)
    impl.sequence_logprob(logits, LP_LABELS).sum().backward()
    check(logits.grad is not None, "sequence_logprob is not differentiable with respect to the logits")
    got = (logits.grad.abs().sum(-1) > 0).long()  # (3, 7): 1 where a position got a gradient
    expected = torch.zeros(3, 7, dtype=torch.long)
    expected[:, :-1] = (LP_LABELS[:, 1:] != IGNORE).long()  # position t predicts the token at t + 1
    not_shifted = (LP_LABELS != IGNORE).long()
    check_close(
        got,
        expected,
        what="which positions (rows x 7) receive a gradient, 1 = some gradient",
        reference="position t gets a gradient iff labels[t + 1] != -100",
        mistakes={
            "logits not shifted (logits at t scored against the label at t)": not_shifted,
            "shifted the wrong way (logits[:, 1:] against labels[:, :-1])": torch.cat(
                [torch.zeros(3, 2, dtype=torch.long), (LP_LABELS[:, :-2] != IGNORE).long()], dim=1
            ),
        },
    )


def test_sequence_logprob_empty_response_raises(impl) -> None:
    """sequence_logprob: a row with no response token raises ValueError"""
    labels = LP_LABELS.clone()
    labels[1] = IGNORE  # row 1: all prompt / padding
    expect_raises(
        ValueError,
        impl.sequence_logprob,
        torch.randn(3, 7, 5),
        labels,
        what="sequence_logprob where row 1 has no response token (log π of nothing would silently be 0)",
    )
    labels = torch.tensor([[4, IGNORE, IGNORE]])  # the only label sits at position 0, which nothing predicts
    expect_raises(
        ValueError,
        impl.sequence_logprob,
        torch.randn(1, 3, 5),
        labels,
        what="sequence_logprob with labels [[4, -100, -100]] (a label at position 0 has no position before it)",
    )


# ---------------------------------------------------------------- Task 7: reward_model_loss

R_CHOSEN = torch.tensor([1.5, -0.3, 0.2, 2.0, -1.0])
R_REJECTED = torch.tensor([0.5, 0.4, 0.2, -1.0, -3.0])


@pytest.mark.points(2)
def test_reward_model_loss_matches_bradley_terry(impl) -> None:
    """reward_model_loss = mean of -log σ(r_chosen − r_rejected); log 2 when the rewards are equal"""
    got = impl.reward_model_loss(R_CHOSEN, R_REJECTED)
    check(
        isinstance(got, torch.Tensor) and got.dim() == 0,
        f"reward_model_loss must return a scalar tensor, got {getattr(got, 'shape', got)}",
    )
    d = R_CHOSEN - R_REJECTED
    check_close(
        got,
        -F.logsigmoid(d).mean(),
        what="reward_model_loss on 5 pairs",
        reference="-F.logsigmoid(r_chosen - r_rejected).mean()",
        mistakes={
            "the sign flipped (σ(r_rejected − r_chosen))": -F.logsigmoid(-d).mean(),
            "missing minus: log σ(...) instead of −log σ(...)": F.logsigmoid(d).mean(),
            "summed over the batch instead of averaged": -F.logsigmoid(d).sum(),
            "σ without the log (−σ(...) instead of −log σ(...))": lambda: -torch.sigmoid(d).mean(),
        },
    )
    tie = impl.reward_model_loss(torch.tensor([0.7, -2.0]), torch.tensor([0.7, -2.0]))
    check_close(tie, math.log(2), what="reward_model_loss with equal rewards", reference="-log σ(0) = log 2")


def test_preference_losses_stable_for_large_gaps(impl) -> None:
    """reward_model_loss and dpo_loss stay finite for large gaps (F.logsigmoid, not log(sigmoid))"""
    d = torch.tensor([-200.0, 0.0, 200.0])
    got = impl.reward_model_loss(d, torch.zeros(3))
    check_close(
        got,
        -F.logsigmoid(d).mean(),
        what="reward_model_loss with reward gaps -200, 0, 200",
        reference="mean(200, log 2, 0) ≈ 66.90",
        mistakes={
            "log(sigmoid(x)) instead of F.logsigmoid(x): σ(-200) rounds to 0 and log 0 = -inf": -torch.log(
                torch.sigmoid(d)
            ).mean(),
        },
    )
    pc, pr = torch.tensor([-10.0, -400.0]), torch.tensor([-400.0, -10.0])
    rc, rr = torch.tensor([-400.0, -10.0]), torch.tensor([-10.0, -400.0])
    got = impl.dpo_loss(pc, pr, rc, rr, beta=1.0)
    margin = (pc - rc) - (pr - rr)
    check_close(
        got,
        dpo_formula(pc, pr, rc, rr, 1.0),
        what="dpo_loss with log-ratio margins ±780 (beta=1)",
        reference="Rafailov et al. eq. 7 with F.logsigmoid: mean(0, 780) = 390",
        mistakes={
            "log(sigmoid(x)) instead of F.logsigmoid(x): σ(-780) rounds to 0 and log 0 = -inf": -torch.log(
                torch.sigmoid(margin)
            ).mean(),
        },
    )


# ---------------------------------------------------------------- Task 8: dpo_loss

PC = torch.tensor([-12.0, -7.5, -20.0, -3.0])  # log π(y_w | x), sums over response tokens
PR = torch.tensor([-14.0, -6.0, -18.5, -9.0])  # log π(y_l | x)
RC = torch.tensor([-13.0, -7.0, -21.0, -4.0])  # log π_ref(y_w | x)
RR = torch.tensor([-12.5, -7.5, -18.0, -8.0])  # log π_ref(y_l | x)


@pytest.mark.points(2)
def test_dpo_loss_matches_paper(impl) -> None:
    """dpo_loss matches the paper: -log σ(β[(log π − log π_ref)(y_w) − (log π − log π_ref)(y_l)])"""
    got = impl.dpo_loss(PC, PR, RC, RR, beta=0.5)
    check(
        isinstance(got, torch.Tensor) and got.dim() == 0,
        f"dpo_loss must return a scalar tensor, got {getattr(got, 'shape', got)}",
    )
    check_close(
        got,
        dpo_formula(PC, PR, RC, RR, 0.5),
        what="dpo_loss on 4 pairs, beta=0.5",
        reference="Rafailov et al. (2023) eq. 7 with F.logsigmoid",
        mistakes=dpo_mistakes(PC, PR, RC, RR, 0.5),
    )
    default = impl.dpo_loss(PC, PR, RC, RR)
    check_close(
        default,
        dpo_formula(PC, PR, RC, RR, 0.1),
        what="dpo_loss on 4 pairs with the default beta (0.1)",
        mistakes={"β forgotten (σ of the raw log-ratio difference)": dpo_formula(PC, PR, RC, RR, 1.0)},
    )
    same = impl.dpo_loss(PC, PR, PC.clone(), PR.clone(), beta=0.5)
    check_close(
        same,
        math.log(2),
        what="dpo_loss when the policy equals the reference",
        reference="-log σ(0) = log 2 ≈ 0.6931: no preference learned yet",
        mistakes={"the reference model left out (no log π_ref terms)": dpo_formula(PC, PR, 0 * PC, 0 * PR, 0.5)},
    )


@pytest.mark.points(2)
def test_dpo_gradient_direction(impl) -> None:
    """dpo_loss falls as log π(chosen) rises and as log π(rejected) falls"""
    pc, pr = PC.clone().requires_grad_(True), PR.clone().requires_grad_(True)
    impl.dpo_loss(pc, pr, RC, RR, beta=0.5).backward()
    check(
        pc.grad is not None and pr.grad is not None,
        "dpo_loss is not differentiable with respect to the policy log-probabilities (did you detach them?)",
    )
    # Trusted gradients: autograd through the paper's formula, and through the flipped-sign mistake.
    ref_c, ref_r = PC.clone().requires_grad_(True), PR.clone().requires_grad_(True)
    dpo_formula(ref_c, ref_r, RC, RR, 0.5).backward()
    bad_c, bad_r = PC.clone().requires_grad_(True), PR.clone().requires_grad_(True)
    (-F.logsigmoid(-0.5 * ((bad_c - RC) - (bad_r - RR))).mean()).backward()
    flipped = "the DPO sign flipped (rejected minus chosen inside σ, or log π_ref − log π)"
    if not bool((pc.grad < 0).all()):
        hint = f"\n  Likely mistake: {flipped}." if bool((pc.grad > 0).all()) else ""
        fail(
            "d dpo_loss / d log π(y_w) must be negative for every pair (raising the chosen response's probability"
            f" lowers the loss); got {[round(float(g), 4) for g in pc.grad]}" + hint
        )
    check_close(
        pc.grad,
        ref_c.grad,
        what="d dpo_loss / d policy_chosen_logps (beta=0.5)",
        reference="autograd of eq. 7: -β σ(-β·margin) / B",
        mistakes={flipped: bad_c.grad},
    )
    check_close(
        pr.grad,
        ref_r.grad,
        what="d dpo_loss / d policy_rejected_logps (beta=0.5)",
        reference="autograd of eq. 7: +β σ(-β·margin) / B",
        mistakes={flipped: bad_r.grad},
    )


# ---------------------------------------------------------------- devices and precision


def test_objectives_on_every_device_and_precision(impl, setting) -> None:
    """lm_loss, sequence_logprob and dpo_loss give the reference values on this device / precision"""
    h, w = torch.randn(2, 7, 8), torch.randn(8, 5) * 0.5
    with setting.autocast():
        logits = setting.tensor(h) @ setting.tensor(w)  # (2, 7, 5): bf16 / fp16 under autocast, like a model's
        loss = impl.lm_loss(logits, setting.tensor(LP_LABELS[:2]))
        logps = impl.sequence_logprob(logits, setting.tensor(LP_LABELS[:2]))
        dpo = impl.dpo_loss(*(setting.tensor(x) for x in (PC, PR, RC, RR)), beta=0.5)
    setting.sync()
    for name, out in (("lm_loss", loss), ("sequence_logprob", logps), ("dpo_loss", dpo)):
        check(out.device.type == setting.device, f"{name} returned a tensor on {out.device}, expected {setting.device}")
    ref_logits = logits.detach().float().cpu()  # the reference scores the very same logits, in float32
    tol = setting.tol
    labels = LP_LABELS[:2]
    check_close(
        loss.float().cpu(),
        ce_mean(ref_logits, labels),
        what=f"lm_loss on {setting.id}",
        **tol,
        reference="F.cross_entropy in float32 on the same logits",
        mistakes={
            "ignored positions counted in the mean (divided by all B*T positions)": lambda: (
                (-token_logps(ref_logits, labels)).sum() / labels.numel()
            ),
            "ignore index not respected (-100 clamped to token 0 and counted)": lambda: (
                -clamped_not_masked(ref_logits, labels)
            ).mean(),
        },
    )
    check_close(
        logps.float().cpu(),
        seq_logprob(ref_logits, labels),
        what=f"sequence_logprob on {setting.id}",
        **tol,
        reference="F.cross_entropy(reduction='none') in float32 on the same logits",
        mistakes=logprob_mistakes(ref_logits, labels),
    )
    check_close(
        dpo.float().cpu(),
        dpo_formula(PC, PR, RC, RR, 0.5),
        what=f"dpo_loss on {setting.id}",
        **tol,
        reference="Rafailov et al. (2023) eq. 7",
        mistakes=dpo_mistakes(PC, PR, RC, RR, 0.5),
    )


# ---------------------------------------------------------------- the pipeline, end to end


@pytest.mark.points(3)
@pytest.mark.timeout(60)
def test_pipeline_demo_end_to_end(impl) -> None:
    """end to end: pretraining lowers the loss, finetuning learns the responses, DPO prefers chosen"""
    out = impl.run_pipeline_demo(seed=0)
    shown = "\n" + "\n".join(f"    {k}: {v:.4g}" for k, v in out.items())
    before, after = out["pretrain_loss_before"], out["pretrain_loss_after"]
    check(
        after < before - 1.0,
        f"pretraining should lower lm_loss on the corpus by well over 1 nat; it went {before:.3f} -> {after:.3f}"
        " (check make_lm_pairs and lm_loss)" + shown,
    )
    before, after = out["sft_logprob_before"], out["sft_logprob_after"]
    check(
        after > before + 3.0 and after > -1.0,
        f"finetuning should make the taught responses likely (log p close to 0); it went {before:.3f} -> {after:.3f}"
        " (check sft_example, collate_sft, sft_loss and sequence_logprob)" + shown,
    )
    check_close(
        out["dpo_loss_before"],
        math.log(2),
        what="dpo_loss before DPO training (the policy is the reference)",
        reference="log 2 ≈ 0.6931",
        atol=1e-4,
    )
    margin = out["dpo_margin_after"]
    if margin < 0:
        fail(
            f"DPO made the policy prefer the REJECTED answers (margin over the reference {margin:.3f} < 0):"
            " check the sign inside dpo_loss, and that sequence_logprob sums over the response" + shown
        )
    check(
        margin > 1.0 and out["dpo_loss_after"] < out["dpo_loss_before"] - 0.1,
        f"DPO should raise chosen over rejected relative to the reference (margin {margin:.3f}, expected > 1) and lower"
        f" dpo_loss ({out['dpo_loss_before']:.3f} -> {out['dpo_loss_after']:.3f})" + shown,
    )
