"""Stage 0.1's worked example: ``nox -s example -- 0.1 [--version solution]``.

First the lesson's Python-shell session (each objective on a tiny input), then "The whole pipeline":
``run_pipeline_demo(verbose=True)``, which pretrains, finetunes and aligns a TinyLM with your functions.
"""

from __future__ import annotations

from grader.example import shell
from shared.loader import load

SESSION = '''
import torch
from shared.loader import load      # LLMFS_VERSION=solution to load the reference
p = load("0.1")
inputs, targets = p.make_lm_pairs(torch.arange(10, 17), context_len=3, stride=2)
inputs, targets                    # windows start at 0 and 2; a window at 4 would need token 17
p.lm_loss(torch.zeros(1, 3, 4), torch.tensor([[1, 2, 3]]))   # uniform over V = 4: log 4
p.sft_example(torch.tensor([5, 6, 7]), torch.tensor([8, 9]))
batch = [p.sft_example(torch.tensor([5, 6, 7]), torch.tensor([8, 9])),
         p.sft_example(torch.tensor([5]), torch.tensor([3]))]
input_ids, labels, padding_mask = p.collate_sft(batch, pad_id=0)
input_ids, labels, padding_mask
_ = torch.manual_seed(0)
logits = torch.randn(2, 5, 10)
p.sequence_logprob(logits, labels)    # row 0: two response tokens, row 1: one
p.sft_loss(logits, labels)            # = (3.8268 + 4.2102) / 3 response tokens
p.dpo_loss(torch.tensor([-12.0]), torch.tensor([-14.0]),    # policy: chosen, rejected
           torch.tensor([-13.0]), torch.tensor([-12.5]),    # reference: chosen, rejected
           beta=0.5)                   # margin = (−12 + 13) − (−14 + 12.5) = 2.5; −log σ(1.25)
'''

shell(SESSION)  # the loader picks your skeleton, or the reference with --version solution
print()
load("0.1").run_pipeline_demo(verbose=True)  # prints the before -> after table
