"""Stage 0.1 — the LLM training pipeline as objectives in code: pretraining -> finetuning -> alignment.

Your tasks (the lesson, README.md, walks through each one):
  Task 1  make_lm_pairs       pretraining data: (input, target) windows from a token stream — the shift
  Task 2  lm_loss             pretraining objective: mean next-token cross-entropy, ignoring -100
  Task 3  sft_example         finetuning data: prompt + response, labels -100 over the prompt
  Task 4  collate_sft         a right-padded batch with labels and a padding mask
  Task 5  sft_loss            finetuning objective: cross-entropy on the response tokens — shift inside
  Task 6  sequence_logprob    log π(response | prompt): a SUM over response tokens — shift inside
  Task 7  reward_model_loss   Bradley–Terry: -log σ(r_chosen − r_rejected)
  Task 8  dpo_loss            Direct Preference Optimization (Rafailov et al., 2023)

ONE CONVENTION FOR THE WHOLE MODULE (the shift happens exactly once):
  * ``targets`` are already shifted: ``targets[t]`` is the token that FOLLOWS ``inputs[t]``.
    ``make_lm_pairs`` does the shift; ``lm_loss`` never shifts.
  * ``labels`` are aligned with the input ids: ``labels[t]`` is the token AT position t, or -100.
    ``sft_example`` / ``collate_sft`` build them without shifting; ``sft_loss`` and
    ``sequence_logprob`` shift once, inside: the logits at position t are scored against ``labels[t + 1]``.

Everything after the tasks (CharTokenizer, TinyLM, the toy data, run_pipeline_demo) is given:
``python stages/0.1-training-pipeline/skeleton/pipeline.py`` runs all three phases with your functions.

Grade your work with:  nox -s grade -- 0.1
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
    # TODO(Task 1): validate the arguments (raise ValueError as the docstring says; stride defaults to context_len),
    #   then cut windows of context_len + 1 tokens starting at 0, stride, 2 * stride, ... while they fit.
    #   inputs are each window without its last token, targets each window without its first (the shift!).
    #   Hint: tokens.unfold(0, size, step) returns every window at once, (M, size); a loop with torch.stack works too.
    raise NotImplementedError("Task 1: make_lm_pairs")


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
    # TODO(Task 2): F.log_softmax over the vocabulary, pick each target's log-probability with .gather,
    #   drop the positions whose target is ignore_index, and average -log p over the positions that are left.
    #   gather cannot index with -100: replace ignored targets by 0 first (they are dropped anyway).
    #   Compare with F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1)) in a REPL.
    raise NotImplementedError("Task 2: lm_loss")


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
    # TODO(Task 3): raise ValueError for an empty response or an empty prompt; concatenate prompt and response;
    #   labels are a copy of input_ids with the prompt positions set to IGNORE_INDEX. Do NOT shift here.
    raise NotImplementedError("Task 3: sft_example")


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
    # TODO(Task 4): T = the longest example; start from input_ids full of pad_id, labels full of IGNORE_INDEX and
    #   padding_mask full of True (on the examples' device), then copy each example into the left of its row.
    raise NotImplementedError("Task 4: collate_sft")


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
    # TODO(Task 5): shift once (drop the last position of logits and the first of labels), then reuse lm_loss.
    raise NotImplementedError("Task 5: sft_loss")


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
    # TODO(Task 6): shift as in sft_loss; raise ValueError if a row has no label != ignore_index left;
    #   log_softmax, gather each label's log-probability, zero the ignored positions, and SUM over time.
    raise NotImplementedError("Task 6: sequence_logprob")


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
    # TODO(Task 7): -log σ(r_chosen − r_rejected), averaged over the batch. Use F.logsigmoid.
    raise NotImplementedError("Task 7: reward_model_loss")


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
    # TODO(Task 8): the log-ratio log π − log π_ref for the chosen and for the rejected responses, their difference
    #   times beta, then the Bradley–Terry loss of Task 7 on it (or -F.logsigmoid(...).mean() directly).
    raise NotImplementedError("Task 8: dpo_loss")


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
