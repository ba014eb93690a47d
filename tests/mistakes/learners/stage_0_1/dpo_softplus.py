"""A learner's Stage 0.1 file (dpo_softplus).

correct: DPO written with softplus(-margin)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "IGNORE_INDEX",
    "make_lm_pairs",
    "lm_loss",
    "sft_example",
    "collate_sft",
    "sft_loss",
    "sequence_logprob",
    "reward_model_loss",
    "dpo_loss",
    "CharTokenizer",
    "TinyLMConfig",
    "TinyLM",
    "CORPUS",
    "SFT_DATA",
    "PREFERENCE_DATA",
    "run_pipeline_demo",
    "format_demo",
]

#: The label that means "no loss here" (prompt tokens, padding). The default of F.cross_entropy.
IGNORE_INDEX: int = -100


# ================================================================ phase 1: pretraining


def make_lm_pairs(
    tokens: torch.Tensor, context_len: int, stride: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a token stream into next-token (input, target) windows. THE SHIFT HAPPENS HERE.

    Window m starts at ``s = m * stride`` and reads ``context_len + 1`` tokens:
    ``inputs[m] = tokens[s : s + T]`` and ``targets[m] = tokens[s + 1 : s + T + 1]``,
    so ``targets[m, t]`` is the token that follows ``inputs[m, t]``. Every window that fits is used.

    Args:
        tokens: (N,) integer token ids, the whole stream.
        context_len: T, tokens per input window, >= 1.
        stride: how far consecutive windows start apart, >= 1; default ``context_len`` (no overlap).
    Returns:
        inputs, targets: both (M, T), same dtype as ``tokens``, with M = (N - T - 1) // stride + 1.
    Raises:
        ValueError: if ``tokens`` is not 1-D, ``context_len`` or ``stride`` < 1, or N < T + 1
            (one window needs T inputs plus the token after them).
    """
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be a 1-D stream of ids, got shape {tuple(tokens.shape)}")
    if context_len < 1:
        raise ValueError(f"context_len must be at least 1, got {context_len}")
    stride = context_len if stride is None else stride
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    n = tokens.numel()
    if n < context_len + 1:
        raise ValueError(
            f"a stream of {n} tokens is too short for context_len={context_len}: one window needs "
            f"context_len + 1 = {context_len + 1} tokens (the inputs plus the token after the last one)"
        )
    windows = tokens.unfold(0, context_len + 1, stride)  # (M, T + 1): every full window
    inputs = windows[:, :-1].clone()  # (M, T)
    targets = windows[:, 1:].clone()  # (M, T): the same window, one token later
    return inputs, targets


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The causal language-modelling loss: mean cross-entropy over every position that has a target.

    NO SHIFT HERE: ``logits[b, t]`` is scored against ``targets[b, t]`` (``make_lm_pairs`` shifted already).
    Equals ``F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=ignore_index)``.

    Args:
        logits: (B, T, V) unnormalised scores for the next token at each position.
        targets: (B, T) integer ids; positions equal to ``ignore_index`` count for nothing.
        ignore_index: the target value meaning "no loss here".
    Returns:
        a scalar tensor: the sum of -log p(target) over kept positions / the number of kept positions
        (NaN when no position is kept, as ``F.cross_entropy`` gives).
    Raises:
        ValueError: if ``logits.shape[:2] != targets.shape``.
    """
    if logits.dim() != 3 or logits.shape[:2] != targets.shape:
        raise ValueError(
            f"expected logits (B, T, V) and targets (B, T), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    log_probs = F.log_softmax(logits.float(), dim=-1)  # (B, T, V), in float32 even under autocast
    keep = targets != ignore_index  # (B, T)
    safe = targets.masked_fill(~keep, 0)  # (B, T): gather cannot index with -100
    nll = -log_probs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (B, T)
    nll = torch.where(keep, nll, torch.zeros_like(nll))  # ignored positions contribute exactly 0
    return nll.sum() / keep.sum()


# ================================================================ phase 2: supervised finetuning


def sft_example(prompt_ids: torch.Tensor, response_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One finetuning example: the model reads prompt + response, and learns only the response.

    NO SHIFT HERE: ``labels`` is aligned with ``input_ids`` (``labels[t]`` is the token at position t,
    or -100 where nothing is learned). ``sft_loss`` / ``sequence_logprob`` do the shift.

    Args:
        prompt_ids: (P,) integer ids of the prompt, P >= 1 (the first response token is predicted
            from the position before it, so something must come before it).
        response_ids: (R,) integer ids of the response, R >= 1.
    Returns:
        input_ids: (P + R,) the prompt followed by the response.
        labels: (P + R,) ``IGNORE_INDEX`` over the prompt, the response ids over the response.
    Raises:
        ValueError: if either part is not 1-D, or is empty (the message names the empty part).
    """
    if prompt_ids.dim() != 1 or response_ids.dim() != 1:
        raise ValueError(
            f"prompt_ids and response_ids must be 1-D, got {tuple(prompt_ids.shape)} and {tuple(response_ids.shape)}"
        )
    if response_ids.numel() == 0:
        raise ValueError("the response is empty: a finetuning example needs at least one response token to learn")
    if prompt_ids.numel() == 0:
        raise ValueError(
            "the prompt is empty: the first response token is predicted from the position before it, "
            "so the prompt needs at least one token (e.g. a BOS token)"
        )
    input_ids = torch.cat([prompt_ids, response_ids])  # (P + R,)
    labels = input_ids.clone()  # (P + R,)
    labels[: prompt_ids.numel()] = IGNORE_INDEX  # the prompt is given, not learned
    return input_ids, labels


def collate_sft(
    examples: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack examples of different lengths into one right-padded batch.

    Args:
        examples: B pairs ``(input_ids (L_b,), labels (L_b,))`` as made by ``sft_example``.
        pad_id: the token id written into padded input positions.
    Returns:
        input_ids: (B, T) with T = max L_b; row b is example b, then ``pad_id`` up to T.
        labels: (B, T); row b is example b's labels, then ``IGNORE_INDEX`` (padding is never learned).
        padding_mask: (B, T) bool, True at padded positions. The course's mask convention:
            True means "blocked / may not be attended to", as in ``nn.MultiheadAttention``'s key_padding_mask.
    Raises:
        ValueError: if ``examples`` is empty or a pair's two tensors differ in length.
    """
    if not examples:
        raise ValueError("collate_sft needs at least one example")
    for b, (ids, lab) in enumerate(examples):
        if ids.shape != lab.shape or ids.dim() != 1:
            raise ValueError(
                f"example {b}: input_ids {tuple(ids.shape)} and labels {tuple(lab.shape)} must be equal 1-D"
            )
    B = len(examples)
    T = max(ids.numel() for ids, _ in examples)
    first = examples[0][0]
    input_ids = torch.full((B, T), pad_id, dtype=first.dtype, device=first.device)  # (B, T)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=first.dtype, device=first.device)  # (B, T)
    padding_mask = torch.ones((B, T), dtype=torch.bool, device=first.device)  # (B, T): True = padding
    for b, (ids, lab) in enumerate(examples):
        n = ids.numel()
        input_ids[b, :n] = ids
        labels[b, :n] = lab
        padding_mask[b, :n] = False  # real tokens: not blocked
    return input_ids, labels, padding_mask


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The finetuning loss: mean cross-entropy over response tokens. THE SHIFT HAPPENS HERE.

    The logits at position t predict the token at position t + 1, so ``logits[:, :-1]`` is scored
    against ``labels[:, 1:]`` (the last position predicts nothing we have).

    Args:
        logits: (B, T, V) the model's output on ``input_ids`` (B, T).
        labels: (B, T) aligned with ``input_ids``, ``ignore_index`` where nothing is learned.
    Returns:
        a scalar tensor, the mean over every response token in the batch.
    """
    return lm_loss(logits[:, :-1, :], labels[:, 1:], ignore_index)  # (B, T-1, V) against (B, T-1)


# ================================================================ phase 3: alignment


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """log π(y | x): the log-probability of each row's response, a SUM over its tokens. THE SHIFT HAPPENS HERE.

    ``result[b] = sum over t with labels[b, t + 1] != ignore_index of log_softmax(logits[b, t])[labels[b, t + 1]]``

    Args:
        logits: (B, T, V) the model's output on ``input_ids`` (B, T).
        labels: (B, T) aligned with ``input_ids``, ``ignore_index`` on the prompt and the padding.
    Returns:
        (B,) float tensor: log π(response_b | prompt_b), a sum (so it is <= 0 and longer responses get lower).
    Raises:
        ValueError: if a row has no response token (nothing to score).
    """
    if logits.dim() != 3 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"expected logits (B, T, V) and labels (B, T), got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    logits = logits[:, :-1, :]  # (B, T-1, V): position t predicts token t + 1 ...
    labels = labels[:, 1:]  # (B, T-1): ... which is labels[t + 1]
    keep = labels != ignore_index  # (B, T-1)
    empty = ~keep.any(dim=-1)  # (B,)
    if bool(empty.any()):
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(
            f"rows {rows} have no response token to score (every label after position 0 is {ignore_index})"
        )
    log_probs = F.log_softmax(logits.float(), dim=-1)  # (B, T-1, V)
    safe = labels.masked_fill(~keep, 0)  # (B, T-1)
    token_logps = log_probs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    token_logps = torch.where(keep, token_logps, torch.zeros_like(token_logps))
    return token_logps.sum(dim=-1)  # (B,)


def reward_model_loss(rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor) -> torch.Tensor:
    """The Bradley–Terry loss of a reward model: mean of -log σ(r_chosen − r_rejected).

    Under Bradley–Terry, P(chosen preferred over rejected) = σ(r_chosen − r_rejected); this is its
    negative log-likelihood. Use ``F.logsigmoid``: ``log(sigmoid(x))`` becomes log 0 = -inf for x << 0.

    Args:
        rewards_chosen: (B,) the reward model's score of each preferred response.
        rewards_rejected: (B,) its score of each dispreferred response.
    Returns:
        a scalar tensor (log 2 ≈ 0.693 when the two rewards are equal).
    """
    return -F.logsigmoid(rewards_chosen - rewards_rejected).mean()


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """Direct Preference Optimization (Rafailov et al., 2023), eq. 7, averaged over the batch:

        -log σ( β [ (log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x)) ] )

    It is the Bradley–Terry loss with the implicit reward r(x, y) = β log π(y|x) / π_ref(y|x).

    Args:
        policy_chosen_logps: (B,) log π(y_w | x) under the model being trained (``sequence_logprob`` sums).
        policy_rejected_logps: (B,) log π(y_l | x) under the model being trained.
        ref_chosen_logps: (B,) log π_ref(y_w | x) under the frozen reference (the SFT model).
        ref_rejected_logps: (B,) log π_ref(y_l | x) under the frozen reference.
        beta: how strongly the policy may move away from the reference (larger: less).
    Returns:
        a scalar tensor (log 2 ≈ 0.693 when the policy equals the reference).
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,) log π/π_ref on y_w
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,) log π/π_ref on y_l
    return torch.nn.functional.softplus(-beta * (chosen_logratios - rejected_logratios)).mean()


# ================================================================ given: tokenizer, tiny model, toy data, demo
# Nothing below is a task. It is the smallest end-to-end pipeline that uses your functions.


class CharTokenizer:
    """Character-level tokenizer. Id 0 is padding; every other id is one character of ``chars`` (sorted)."""

    pad_id: int = 0

    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        self.stoi = {c: i + 1 for i, c in enumerate(self.chars)}  # 0 is reserved for padding
        self.itos = {i: c for c, i in self.stoi.items()}

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> torch.Tensor:
        """str -> (len(text),) long tensor of ids."""
        return torch.tensor([self.stoi[c] for c in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> str:
        """(L,) ids -> str (padding dropped)."""
        return "".join(self.itos.get(int(i), "") for i in ids)


@dataclass
class TinyLMConfig:
    vocab_size: int  # number of token ids, padding included
    window: int = 6  # tokens each position sees: itself and the window - 1 before it
    d_embed: int = 16  # width of a token embedding
    d_hidden: int = 96  # width of the MLP's hidden layer


class TinyLM(nn.Module):
    """A fixed-window neural language model (Bengio et al., 2003) — no attention needed yet.

    Position t sees the embeddings of tokens t - window + 1 .. t (zeros before the start) and
    predicts token t + 1. It never sees a later token, so it is causal, like a GPT.
    """

    def __init__(self, config: TinyLMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_embed)
        self.mlp = nn.Sequential(
            nn.Linear(config.window * config.d_embed, config.d_hidden),
            nn.Tanh(),
            nn.Linear(config.d_hidden, config.vocab_size),
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, T) -> logits (B, T, V); logits[:, t] scores the token at t + 1."""
        k = self.config.window
        x = self.embed(ids)  # (B, T, d)
        x = F.pad(x, (0, 0, k - 1, 0))  # (B, T + k - 1, d): zeros before the first token
        x = x.unfold(1, k, 1)  # (B, T, d, k): the window ending at each position
        x = x.transpose(2, 3).flatten(2)  # (B, T, k * d)
        return self.mlp(x)  # (B, T, V)


class _Adam:
    """Adam (Kingma & Ba, 2015) in a few lines. ``torch.optim.Adam`` does the same, but building one
    imports ``torch._dynamo`` (about a second), and the demo must run in well under a second."""

    def __init__(self, params: list[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.params, self.lr, self.betas, self.t = params, lr, betas, 0
        self.m = [torch.zeros_like(p) for p in params]  # running mean of gradients
        self.v = [torch.zeros_like(p) for p in params]  # running mean of squared gradients

    @torch.no_grad()
    def step(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` and take one Adam step."""
        for p in self.params:
            p.grad = None
        loss.backward()
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            m_hat, v_hat = m / (1 - b1**self.t), v / (1 - b2**self.t)  # bias correction
            p.sub_(self.lr * m_hat / (v_hat.sqrt() + 1e-8))


#: Pretraining text: raw, unlabelled, just "what text looks like".
CORPUS: str = (
    "the sky is blue. the sea is blue. the grass is green. the leaf is green. "
    "the sun is hot. the fire is hot. the snow is cold. the ice is cold. "
    "a bird can fly. a fish can swim. a dog can run. a cat can sit. "
)
#: Finetuning data: (prompt, response) pairs in a format the corpus never showed.
SFT_DATA: list[tuple[str, str]] = [
    ("Q: sky? A:", " blue."),
    ("Q: grass? A:", " green."),
    ("Q: sun? A:", " hot."),
    ("Q: snow? A:", " cold."),
]
#: Preference data: (prompt, chosen, rejected) — a person liked the first answer better.
PREFERENCE_DATA: list[tuple[str, str, str]] = [
    ("Q: sea? A:", " blue.", " hot."),
    ("Q: leaf? A:", " green.", " cold."),
    ("Q: fire? A:", " hot.", " blue."),
    ("Q: ice? A:", " cold.", " green."),
]


def _batch(tok: CharTokenizer, pairs: list[tuple[str, str]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt, response) strings -> input_ids (B, T), labels (B, T) through sft_example and collate_sft."""
    examples = [sft_example(tok.encode(p), tok.encode(r)) for p, r in pairs]
    input_ids, labels, _ = collate_sft(examples, tok.pad_id)  # TinyLM is causal; right padding cannot leak back
    return input_ids.to(device), labels.to(device)


def run_pipeline_demo(seed: int = 0, device: str | torch.device = "cpu", verbose: bool = False) -> dict[str, float]:
    """Pretrain, finetune and align a TinyLM on the toy data, using this module's objectives.

    Returns before/after numbers for each phase (all on the training data: this shows the objectives
    work, not that the model generalises):
        pretrain_loss_*       lm_loss on the corpus windows (nats per token).
        sft_logprob_*         mean over SFT_DATA of log π(response | prompt) (nats per response).
        dpo_gap_*             mean over PREFERENCE_DATA of log π(chosen) − log π(rejected).
        dpo_margin_after      the same gap minus the reference model's gap (0 before training).
        dpo_loss_*            dpo_loss over PREFERENCE_DATA (log 2 before training).
    """
    device = torch.device(device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small gain nothing from threads, and lose a lot on a busy CPU
    try:
        with torch.random.fork_rng(devices=[]):  # do not disturb the caller's random state
            out = _demo(seed, device)
    finally:
        torch.set_num_threads(threads)
    if verbose:
        print(format_demo(out))
    return out


def _demo(seed: int, device: torch.device) -> dict[str, float]:
    """The body of run_pipeline_demo (single-threaded, inside a forked random state)."""
    torch.manual_seed(seed)
    tok = CharTokenizer(CORPUS + "".join(p + r for p, r in SFT_DATA) + "".join("".join(t) for t in PREFERENCE_DATA))
    model = TinyLM(TinyLMConfig(vocab_size=tok.vocab_size)).to(device)
    out: dict[str, float] = {}

    # ---- phase 1: pretraining — next-token prediction on raw text
    inputs, targets = make_lm_pairs(tok.encode(CORPUS), context_len=16, stride=4)  # (M, 16) each
    inputs, targets = inputs.to(device), targets.to(device)
    opt = _Adam(list(model.parameters()), lr=1e-2)
    with torch.no_grad():
        out["pretrain_loss_before"] = float(lm_loss(model(inputs), targets))
    for _ in range(60):
        opt.step(lm_loss(model(inputs), targets))
    with torch.no_grad():
        out["pretrain_loss_after"] = float(lm_loss(model(inputs), targets))

    # ---- phase 2: supervised finetuning — learn the responses, not the prompts
    sft_ids, sft_labels = _batch(tok, SFT_DATA, device)
    with torch.no_grad():
        out["sft_logprob_before"] = float(sequence_logprob(model(sft_ids), sft_labels).mean())
    opt = _Adam(list(model.parameters()), lr=1e-2)
    for _ in range(20):
        opt.step(sft_loss(model(sft_ids), sft_labels))
    with torch.no_grad():
        out["sft_logprob_after"] = float(sequence_logprob(model(sft_ids), sft_labels).mean())

    # ---- phase 3: alignment with DPO — prefer chosen over rejected, relative to a frozen reference
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    B = len(PREFERENCE_DATA)
    pref_ids, pref_labels = _batch(
        tok, [(p, c) for p, c, _ in PREFERENCE_DATA] + [(p, r) for p, _, r in PREFERENCE_DATA], device
    )  # (2B, T): rows 0..B-1 chosen, rows B..2B-1 rejected
    with torch.no_grad():
        ref_logps = sequence_logprob(reference(pref_ids), pref_labels)  # (2B,)
    ref_chosen, ref_rejected = ref_logps[:B], ref_logps[B:]

    def policy_logps() -> tuple[torch.Tensor, torch.Tensor]:
        logps = sequence_logprob(model(pref_ids), pref_labels)  # (2B,)
        return logps[:B], logps[B:]

    beta = 0.1
    with torch.no_grad():
        chosen, rejected = policy_logps()
        out["dpo_gap_before"] = float((chosen - rejected).mean())
        out["dpo_loss_before"] = float(dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta))
    opt = _Adam(list(model.parameters()), lr=2e-3)
    for _ in range(15):
        chosen, rejected = policy_logps()
        opt.step(dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta))
    with torch.no_grad():
        chosen, rejected = policy_logps()
        out["dpo_gap_after"] = float((chosen - rejected).mean())
        out["dpo_margin_after"] = float(((chosen - ref_chosen) - (rejected - ref_rejected)).mean())
        out["dpo_loss_after"] = float(dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta))
    return out


def format_demo(out: dict[str, float]) -> str:
    """The demo's numbers, one line per quantity: ``before -> after``."""
    rows = [
        ("pretraining", "lm_loss on the corpus (nats/token)", out["pretrain_loss_before"], out["pretrain_loss_after"]),
        ("finetuning", "log p(response | prompt)", out["sft_logprob_before"], out["sft_logprob_after"]),
        ("DPO", "log p(chosen) - log p(rejected)", out["dpo_gap_before"], out["dpo_gap_after"]),
        ("", "  the same, minus the reference's", 0.0, out["dpo_margin_after"]),
        ("", "dpo_loss", out["dpo_loss_before"], out["dpo_loss_after"]),
    ]
    return "\n".join(f"{phase:<12} {what:<36} {before:8.3f} -> {after:8.3f}" for phase, what, before, after in rows)


if __name__ == "__main__":
    run_pipeline_demo(verbose=True)
