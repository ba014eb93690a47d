from tests.mistakes import Mistake

MISTAKES = [
    Mistake(
        "0.1", "targets not shifted",
        "targets = windows[:, 1:].clone()",
        "targets = windows[:, :-1].clone()",
        "targets not shifted",
        check="lm_pairs",
    ),
    Mistake(
        "0.1", "the last full window dropped",
        "windows = tokens.unfold(0, context_len + 1, stride)",
        "windows = tokens[:-1].unfold(0, context_len + 1, stride)",
        "last full window dropped",
        check="lm_pairs",
    ),
    Mistake(
        "0.1", "ignored positions counted in the mean",
        "return nll.sum() / keep.sum()",
        "return nll.sum() / keep.numel()",
        "ignored positions counted in the mean",
        check="lm_loss",
    ),
    Mistake(
        "0.1", "ignore index not respected",
        "nll = torch.where(keep, nll, torch.zeros_like(nll))  # ignored positions contribute exactly 0\n"
        "    return nll.sum() / keep.sum()",
        "return nll.mean()",
        "ignore index not respected",
        check="lm_loss",
    ),
    Mistake(
        "0.1", "loss over prompt tokens",
        "labels[: prompt_ids.numel()] = IGNORE_INDEX  # the prompt is given, not learned",
        "pass",
        "loss over prompt tokens",
        check="sft_example",
    ),
    Mistake(
        "0.1", "padding counted in the loss",
        "labels = torch.full((B, T), IGNORE_INDEX, dtype=first.dtype, device=first.device)",
        "labels = torch.full((B, T), pad_id, dtype=first.dtype, device=first.device)",
        "padding counted in the loss",
        check="collate",
    ),
    Mistake(
        "0.1", "padding mask inverted",
        "padding_mask[b, :n] = False  # real tokens: not blocked",
        "padding_mask[b, :n] = False  # real tokens: not blocked\n    padding_mask = ~padding_mask",
        "padding mask inverted",
        check="collate",
    ),
    Mistake(
        "0.1", "logits not shifted in sft_loss",
        "return lm_loss(logits[:, :-1, :], labels[:, 1:], ignore_index)",
        "return lm_loss(logits, labels, ignore_index)",
        "logits not shifted",
        check="sft_loss",
    ),
    Mistake(
        "0.1", "logits not shifted in sequence_logprob",
        "logits = logits[:, :-1, :]  # (B, T-1, V): position t predicts token t + 1 ...\n    labels = labels[:, 1:]",
        "logits = logits[:, 1:, :]  # (B, T-1, V): position t predicts token t + 1 ...\n    labels = labels[:, 1:]",
        "logits not shifted",
        check="sequence_logprob",
    ),
    Mistake(
        "0.1", "log-probabilities averaged instead of summed",
        "return token_logps.sum(dim=-1)  # (B,)",
        "return token_logps.sum(dim=-1) / keep.sum(dim=-1)  # (B,)",
        "averaged instead of summed",
        check="sequence_logprob",
    ),
    Mistake(
        "0.1", "log(sigmoid(x)) instead of F.logsigmoid(x)",
        "return -F.logsigmoid(rewards_chosen - rewards_rejected).mean()",
        "return -torch.log(torch.sigmoid(rewards_chosen - rewards_rejected)).mean()",
        "F.logsigmoid",
        check="reward or stable",
    ),
    Mistake(
        "0.1", "the DPO sign flipped",
        "return reward_model_loss(beta * chosen_logratios, beta * rejected_logratios)",
        "return reward_model_loss(beta * rejected_logratios, beta * chosen_logratios)",
        "DPO sign flipped",
        check="dpo",
    ),
    Mistake(
        "0.1", "the reference model left out of DPO",
        "chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,) log π/π_ref on y_w\n"
        "    rejected_logratios = policy_rejected_logps - ref_rejected_logps",
        "chosen_logratios = policy_chosen_logps  # (B,) log π/π_ref on y_w\n"
        "    rejected_logratios = policy_rejected_logps",
        "reference model left out",
        check="dpo",
    ),
]
