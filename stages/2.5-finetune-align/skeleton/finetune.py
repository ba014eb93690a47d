"""Stage 2.5 — finetune and align your own GPT: SFT, then DPO, with stage 0.1's losses (LoRA optional).

Your file. Fill in each ``TODO(Task N)``; grade it with ``nox -s grade -- 2.5``.
The lesson is README.md beside this folder; the reference lives in ``solution/`` (read it after you pass).

Built from the earlier stages, loaded through the course loader (with ``--deps mine`` they are
your own):
  0.1  sft_example, collate_sft, sft_loss, sequence_logprob, dpo_loss, IGNORE_INDEX
  2.4  generate (greedy decoding with the KV cache)

Shapes: B examples, T tokens, V vocabulary, P prompt tokens, R response tokens.
The chat template: ``prompt ids + [sep]`` then ``response ids + [sep]``, where ``sep`` is a special
token of the stage 2.1 tokenizer (``<|endoftext|>``: the only one a pretrained vocabulary has).
"""

from __future__ import annotations

import copy  # noqa: F401 - for Task 4
import math  # noqa: F401 - for Task 9
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: F401 - for Task 8
from torch import nn

from shared.loader import load_dep

_pipe = load_dep("0.1")
sft_example = _pipe.sft_example  # (P,), (R,) -> input_ids (P + R,), labels (P + R,)
collate_sft = _pipe.collate_sft  # examples, pad_id -> input_ids (B, T), labels (B, T), padding_mask (B, T)
sft_loss = _pipe.sft_loss  # logits (B, T, V), labels (B, T) -> scalar
sequence_logprob = _pipe.sequence_logprob  # logits (B, T, V), labels (B, T) -> (B,) summed log-probs
dpo_loss = _pipe.dpo_loss  # four (B,) log-prob tensors, beta -> scalar
IGNORE_INDEX: int = _pipe.IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "SEP",
    "encode_chat",
    "sft_batch",
    "sft_step",
    "frozen_reference",
    "response_logprobs",
    "dpo_batch",
    "dpo_step",
    "greedy_response",
    "preference_accuracy",
    "kl_to_reference",
    "LoRALinear",
    "add_lora",
]

#: The separator: ends the prompt and ends the response. A special token of the 2.1 tokenizer.
SEP: str = "<|endoftext|>"


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The stage 2.2 GPT returns (logits, loss); a plain module may return logits only: (B, T, V)."""
    out = model(ids)
    return out[0] if isinstance(out, tuple) else out


# ----------------------------------------------------------------------------- Task 1: the chat template


def encode_chat(tokenizer: Any, prompt: str, response: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The chat template: ``prompt_ids = encode(prompt) + [sep]``, ``response_ids = encode(response) + [sep]``.

    The separator is ``tokenizer.special_tokens[SEP]``. The texts are encoded as plain text
    (``allowed_special="none"``): a prompt that contains the string "<|endoftext|>" cannot end
    itself early. Returns int64 tensors (P,) and (R,), or (P,) and None when ``response`` is None
    (a prompt to generate from). Raises ValueError when the tokenizer has no ``SEP`` token.
    """
    # TODO(Task 1): prompt_ids = encode(prompt) + [sep] and, when a response is given, response_ids =
    #               encode(response) + [sep], as int64 tensors; sep = tokenizer.special_tokens[SEP]
    #               (ValueError when missing).
    raise NotImplementedError("Task 1: the chat template")


# ----------------------------------------------------------------------------- Task 2: SFT batches


def sft_batch(tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt, response) pairs -> ``input_ids`` (B, T) and ``labels`` (B, T), right-padded.

    Each pair goes through ``encode_chat`` and stage 0.1's ``sft_example`` (labels IGNORE_INDEX over
    the prompt and its separator: only the response and its closing separator are learned); the
    batch is stage 0.1's ``collate_sft`` with ``pad_id`` = the separator id (padding is never learned).
    """
    # TODO(Task 2): encode each pair with encode_chat, make it an example with stage 0.1's sft_example, and
    #               collate with collate_sft(pad_id=sep); return input_ids, labels.
    raise NotImplementedError("Task 2: SFT batches")


# ----------------------------------------------------------------------------- Task 3: one SFT step


def sft_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    grad_clip: float | None = 1.0,
) -> float:
    """One supervised finetuning step: stage 0.1's ``sft_loss`` on the model's logits, backward,
    clip the gradient norm to ``grad_clip`` (None: no clipping), optimizer step. Returns the loss."""
    # TODO(Task 3): zero the gradients, sft_loss(logits, labels), backward, clip to grad_clip (unless None),
    #               optimizer.step(); return the loss as a float.
    raise NotImplementedError("Task 3: one SFT step")


# ----------------------------------------------------------------------------- Task 4: the frozen reference


def frozen_reference(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` (the SFT model): DPO's π_ref.

    Its own tensors (a deep copy: no parameter shared with ``model``), in eval mode, with
    ``requires_grad`` False on every parameter, so that training the policy never changes it.
    """
    # TODO(Task 4): a deep copy of model, in eval mode, every parameter with requires_grad False.
    raise NotImplementedError("Task 4: the frozen reference")


# ----------------------------------------------------------------------------- Task 5: response log-probs


def response_logprobs(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log π(response | prompt) of each row: stage 0.1's ``sequence_logprob`` on the model's logits.

    A SUM over the response tokens (labels != IGNORE_INDEX), never a mean: DPO compares the
    probabilities of whole responses. input_ids, labels: (B, T) -> (B,) float.
    """
    # TODO(Task 5): stage 0.1's sequence_logprob on the model's logits: summed over the response tokens.
    raise NotImplementedError("Task 5: response log-probs")


# ----------------------------------------------------------------------------- Task 6: DPO batches


def dpo_batch(tokenizer: Any, triples: Sequence[tuple[str, str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt, chosen, rejected) triples -> one batch of 2B rows: ``input_ids`` (2B, T), ``labels`` (2B, T).

    Rows 0..B-1 are the chosen responses, rows B..2B-1 the rejected ones, in the same order (row
    b and row B + b share a prompt), all built by ``sft_batch`` (prompt masked, one padding length).
    """
    # TODO(Task 6): the chosen pairs then the rejected pairs, in one sft_batch.
    raise NotImplementedError("Task 6: DPO batches")


# ----------------------------------------------------------------------------- Task 7: one DPO step


def dpo_step(
    policy: nn.Module,
    reference: nn.Module,
    optimizer: torch.optim.Optimizer,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 0.1,
    grad_clip: float | None = 1.0,
) -> dict[str, float]:
    """One DPO step on a ``dpo_batch`` (2B rows: chosen, then rejected).

    The policy's summed response log-probs (with gradients), the reference's (under
    ``torch.no_grad``), stage 0.1's ``dpo_loss`` with ``beta``, backward, clip, optimizer step.
    Returns {"loss": ..., "margin": ..., "accuracy": ...}: the mean implicit reward margin
    β[(log π − log π_ref)(y_w) − (log π − log π_ref)(y_l)] before the step, and the fraction of
    rows whose margin is > 0.
    """
    # TODO(Task 7): policy log-probs with gradients, reference log-probs under torch.no_grad, stage 0.1's
    #               dpo_loss, backward, clip, step; return loss, mean margin, accuracy.
    raise NotImplementedError("Task 7: one DPO step")


# ----------------------------------------------------------------------------- Task 8: evaluation


@torch.no_grad()
def greedy_response(model: nn.Module, tokenizer: Any, prompt: str, max_new_tokens: int = 32) -> str:
    """The model's answer to ``prompt``: greedy decoding with stage 2.4's ``generate`` (temperature 0,
    ``eos_id`` = the separator), from the chat-template prompt; the text of the new tokens before
    the first separator (all of them when none came). The prompt is cropped to its last
    ``block_size - max_new_tokens`` tokens when too long."""
    # TODO(Task 8): encode_chat the prompt, stage 2.4's generate with temperature=0.0 and eos_id=sep, decode
    #               the new tokens before the first sep.
    raise NotImplementedError("Task 8: greedy_response")


@torch.no_grad()
def preference_accuracy(
    policy: nn.Module, reference: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor
) -> float:
    """The fraction of pairs in a ``dpo_batch`` whose implicit reward margin is > 0:
    (log π − log π_ref)(y_w) > (log π − log π_ref)(y_l). A tie (margin exactly 0, as when the
    policy IS the reference) counts half, so an untrained policy scores 0.5."""
    # TODO(Task 8): margin = (log pi - log pi_ref)(chosen) - (log pi - log pi_ref)(rejected); fraction > 0,
    #               ties count half.
    raise NotImplementedError("Task 8: preference_accuracy")


@torch.no_grad()
def kl_to_reference(
    policy: nn.Module, reference: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor
) -> float:
    """How far the policy has moved from the reference on these responses, in nats per response:

        mean over rows b of  sum over response positions t of  KL( π(· | x, y_<t) ‖ π_ref(· | x, y_<t) )

    the exact KL over the whole vocabulary at each position that predicts a response token
    (``labels[b, t + 1] != IGNORE_INDEX``: the same positions ``sequence_logprob`` sums). >= 0, and 0
    exactly when the two models agree."""
    # TODO(Task 8): full-vocabulary KL(pi || pi_ref) at every position that predicts a response token, summed
    #               per row, mean over rows.
    raise NotImplementedError("Task 8: kl_to_reference")


# ----------------------------------------------------------------------------- Task 9 (optional): LoRA


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-r update (Hu et al., 2021, eq. 3):

        y = base(x) + (alpha / r) · x Aᵀ Bᵀ       A: (r, in_features), B: (out_features, r)

    ``A`` ~ kaiming-uniform (as nn.Linear's weight, a = sqrt(5)); ``B`` = 0, so the update is zero at
    initialisation and the layer computes exactly what ``base`` did. ``base``'s weight and bias are
    frozen (requires_grad False); only A and B train.
    """

    def __init__(self, base: nn.Linear, r: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        # TODO(Task 9): keep base (frozen), r, alpha, scaling = alpha / r; lora_A (r, in) kaiming-
        #               uniform(a=sqrt(5)), lora_B (out, r) zeros.
        raise NotImplementedError("Task 9: LoRALinear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in_features) -> (..., out_features)."""
        # TODO(Task 9): base(x) + scaling * (x @ A^T) @ B^T.
        raise NotImplementedError("Task 9: LoRALinear.forward")


def add_lora(model: nn.Module, r: int = 4, alpha: float = 8.0, targets: Sequence[str] = ("attn",)) -> float:
    """Adapters only: freeze every parameter of ``model``, then replace each ``nn.Linear`` whose
    qualified name contains one of ``targets`` (e.g. ``blocks.0.attn.q_proj``) by a ``LoRALinear``
    around it. Returns the trainable fraction: trainable parameters / all parameters (each tensor
    counted once), after the change. Raises ValueError when no layer matches."""
    # TODO(Task 9): freeze everything, wrap each matching nn.Linear in a LoRALinear, return trainable / total
    #               parameters.
    raise NotImplementedError("Task 9: add_lora")
