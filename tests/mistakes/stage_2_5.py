from tests.mistakes import Mistake

_DPO_LOSS = "    loss = dpo_loss(logps[:B], logps[B:], ref_logps[:B], ref_logps[B:], beta)\n"

MISTAKES = [
    Mistake(
        "2.5", "no separator after the prompt",
        "prompt_ids = torch.tensor(tokenizer.encode(prompt) + [sep], dtype=torch.long)",
        "prompt_ids = torch.tensor(tokenizer.encode(prompt), dtype=torch.long)",
        "no separator after the prompt",
    ),
    Mistake(
        "2.5", "loss on the prompt too",
        "examples = [sft_example(*encode_chat(tokenizer, p, r)) for p, r in pairs]",
        "examples = [(torch.cat(encode_chat(tokenizer, p, r)),) * 2 for p, r in pairs]",
        "loss on the prompt too",
    ),
    Mistake(
        "2.5", "SFT loss on the prompt too",
        "loss = sft_loss(_logits(model, input_ids), labels)  # mean over the response tokens only",
        "loss = sft_loss(_logits(model, input_ids), input_ids)",
        "SFT loss on the prompt too",
    ),
    Mistake(
        "2.5", "the reference shares parameters with the policy",
        "reference = copy.deepcopy(model)", "reference = copy.copy(model)",
        "the reference shares parameters with the policy",
    ),
    Mistake(
        "2.5", "the reference is not frozen",
        "    reference.requires_grad_(False)\n", "",
        "the reference is not frozen",
    ),
    Mistake(
        "2.5", "log-probs averaged instead of summed",
        "return sequence_logprob(_logits(model, input_ids), labels)  # (B,)",
        "return sequence_logprob(_logits(model, input_ids), labels) / (labels[:, 1:] != IGNORE_INDEX).sum(-1)",
        "log-probs averaged instead of summed",
    ),
    Mistake(
        "2.5", "chosen and rejected swapped (rows of the batch)",
        "pairs = [(p, c) for p, c, _ in triples] + [(p, r) for p, _, r in triples]",
        "pairs = [(p, r) for p, _, r in triples] + [(p, c) for p, c, _ in triples]",
        "chosen and rejected swapped (rows of the batch)",
    ),
    Mistake(
        "2.5", "chosen and rejected swapped (in the loss)",
        _DPO_LOSS, "    loss = dpo_loss(logps[B:], logps[:B], ref_logps[B:], ref_logps[:B], beta)\n",
        "chosen and rejected swapped (in the loss)",
    ),
    Mistake(
        "2.5", "beta applied twice",
        _DPO_LOSS, "    loss = dpo_loss(beta * logps[:B], beta * logps[B:], beta * ref_logps[:B], beta * ref_logps[B:], beta)\n",
        "beta applied twice",
    ),
    Mistake(
        "2.5", "beta applied outside the logsigmoid",
        _DPO_LOSS,
        "    loss = -beta * F.logsigmoid((logps[:B] - ref_logps[:B]) - (logps[B:] - ref_logps[B:])).mean()\n",
        "beta applied outside the logsigmoid",
    ),
    Mistake(
        "2.5", "the reference model updated",
        "    with torch.no_grad():\n        ref_logps = response_logprobs(reference, input_ids, labels)  # (2B,)\n",
        "    ref_logps = response_logprobs(reference, input_ids, labels)  # (2B,)\n",
        "the reference model updated",
    ),
    Mistake(
        "2.5", "ties counted as losses",
        "return float(((margin > 0).float() + 0.5 * (margin == 0).float()).mean())",
        "return float((margin > 0).float().mean())",
        "ties counted as losses",
    ),
    Mistake(
        "2.5", "KL in the wrong direction",
        "kl = (logp.exp() * (logp - logq)).sum(dim=-1)", "kl = (logq.exp() * (logq - logp)).sum(dim=-1)",
        "KL in the wrong direction",
    ),
    Mistake(
        "2.5", "the separator kept in the answer",
        "new = new[: new.index(sep)]", "new = new[: new.index(sep) + 1]",
        "the separator kept in the answer",
    ),
    Mistake(
        "2.5", "LoRA B initialised non-zero",
        "self.lora_B = nn.Parameter(torch.zeros(base.out_features, r,",
        "self.lora_B = nn.Parameter(torch.randn(base.out_features, r,",
        "LoRA B initialised non-zero",
    ),
    Mistake(
        "2.5", "LoRA update scaled by alpha instead of alpha / r",
        "self.scaling = alpha / r", "self.scaling = alpha",
        "scaled by alpha instead of alpha / r",
    ),
    Mistake(
        "2.5", "the base weights not frozen",
        "    model.requires_grad_(False)\n    found = [", "    found = [",
        "the base weights not frozen",
    ),
]  # fmt: skip
