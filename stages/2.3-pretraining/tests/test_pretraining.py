"""Graded checks for stage 2.3 — pretraining.

The checks run your functions on a tiny language model defined here (``TinyLM``: token and
position embeddings, dropout, a LayerNorm, a Linear with a bias, an output layer tied to the
token table), so that they take seconds and a failure points at this stage, not at your GPT.

Reference numerics:
  * get_batch: the definition (windows of ``np.arange`` data, where the next token is the id + 1);
  * lr_at: the schedule's formula (linear warmup, cosine decay to a floor), written out below;
  * param_groups: the rule "decay exactly the >= 2-D weights that no nn.Embedding owns";
  * clip_grad_norm: ``torch.nn.utils.clip_grad_norm_``;
  * train_step: the same step done with plain torch (one backward over the concatenated
    micro-batches, plain SGD (p -= lr * grad), ``torch.nn.utils.clip_grad_norm_``);
  * checkpoints and the loop: an uninterrupted run compared bit for bit with an interrupted and
    resumed one (on the CPU, the same operations in the same order give the same bits).
"""

from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared.testing import check, check_close, expect_raises, fail

V, D, BLOCK = 16, 8, 8  # vocabulary, width and context of the test model


class GainShiftNorm(nn.Module):
    """A LayerNorm written by hand, as in stage 1.5b (1-D gain and shift, not nn.LayerNorm)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(d))
        self.shift = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(var + 1e-5) * self.gain + self.shift


class TinyLM(nn.Module):
    """A one-layer language model with every kind of parameter GPT has. forward(ids, targets) -> (logits, loss)."""

    def __init__(self, vocab: int = V, d: int = D, block: int = BLOCK, dropout: float = 0.1) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, d)
        self.pos_emb = nn.Embedding(block, d)
        self.drop = nn.Dropout(dropout)
        self.ln = GainShiftNorm(d)
        self.fc = nn.Linear(d, d)
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied, as in GPT-2

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        T = ids.shape[1]
        h = self.drop(self.tok_emb(ids) + self.pos_emb(torch.arange(T, device=ids.device)))  # (B, T, d)
        h = h + torch.tanh(self.fc(self.ln(h)))  # (B, T, d)
        logits = self.lm_head(self.ln_f(h))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))  # (B*T, vocab)
        return logits, loss


def tiny_model(seed: int = 0, dropout: float = 0.1) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM(dropout=dropout)


def repeated_corpus(n: int = 512) -> np.ndarray:
    """A tiny corpus that repeats one 12-token sentence: a model can learn it completely."""
    sentence = [1, 5, 3, 9, 2, 7, 7, 4, 11, 6, 0, 13]
    return np.array((sentence * (n // len(sentence) + 1))[:n], dtype=np.uint16)


class PlainSGD:
    """Plain SGD, p -= lr * grad, with the interface your code uses (param_groups, step, zero_grad).

    The checks use these small optimizers instead of torch.optim because torch.optim's first step
    imports torch._dynamo, which costs seconds; your code cannot tell the difference.
    """

    def __init__(self, params: object, lr: float) -> None:
        self.param_groups: list[dict[str, object]] = [{"params": list(params), "lr": lr}]  # type: ignore[call-overload]
        self.state: dict[object, dict[str, torch.Tensor]] = {}

    def _params(self) -> list[nn.Parameter]:
        return [p for g in self.param_groups for p in g["params"]]  # type: ignore[attr-defined]

    @torch.no_grad()
    def step(self) -> None:
        for g in self.param_groups:
            for p in g["params"]:  # type: ignore[attr-defined]
                if p.grad is not None:
                    self._update(p, float(g["lr"]))  # type: ignore[arg-type]

    def _update(self, p: nn.Parameter, lr: float) -> None:
        p.add_(p.grad, alpha=-lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def state_dict(self) -> dict[str, object]:
        index = {id(p): i for i, p in enumerate(self._params())}
        return {
            "state": {index[id(p)]: {k: v.clone() for k, v in st.items()} for p, st in self.state.items()},
            "param_groups": [{**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
                             for g in self.param_groups],  # type: ignore[attr-defined]
        }  # fmt: skip

    def load_state_dict(self, sd: dict[str, object]) -> None:
        params = self._params()
        self.state = {params[int(i)]: {k: v.clone() for k, v in st.items()} for i, st in sd["state"].items()}  # type: ignore[attr-defined]
        for g, saved in zip(self.param_groups, sd["param_groups"], strict=False):  # type: ignore[call-overload]
            g.update({k: v for k, v in saved.items() if k != "params"})


class PlainAdam(PlainSGD):
    """Adam (Kingma & Ba, 2015) with bias correction, betas (0.9, 0.95), eps 1e-8: state per parameter."""

    def _update(self, p: nn.Parameter, lr: float) -> None:
        st = self.state.setdefault(p, {"step": torch.zeros(()), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)})
        st["step"] += 1
        t = float(st["step"])
        st["exp_avg"].mul_(0.9).add_(p.grad, alpha=0.1)
        st["exp_avg_sq"].mul_(0.95).addcmul_(p.grad, p.grad, value=0.05)
        m_hat = st["exp_avg"] / (1 - 0.9**t)
        v_hat = st["exp_avg_sq"] / (1 - 0.95**t)
        p.add_(m_hat / (v_hat.sqrt() + 1e-8), alpha=-lr)


# ================================================================ Task 1: get_batch


def _batch(impl, data: np.ndarray, B: int, T: int, seed: int = 0, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    out = impl.get_batch(data, B, T, device, torch.Generator().manual_seed(seed))
    check(
        isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out),
        f"get_batch must return a tuple (x, y) of two tensors, got {type(out).__name__}",
    )
    return out


@pytest.mark.points(2)
def test_get_batch_shapes_and_shift(impl) -> None:
    """get_batch returns (B, T) int64 windows x and their next tokens y = x shifted by one"""
    data = np.arange(500, dtype=np.uint16)  # token id = position, so the next token is id + 1
    B, T = 6, 10
    x, y = _batch(impl, data, B, T)
    for name, t in (("x", x), ("y", y)):
        check(tuple(t.shape) == (B, T), f"get_batch(data, batch_size={B}, block_size={T}): {name} has shape {tuple(t.shape)}, expected ({B}, {T})")
        check(t.dtype == torch.int64, f"{name} has dtype {t.dtype}; token ids for nn.Embedding and cross_entropy must be int64 (torch.long)")
    starts = x[:, :1]  # (B, 1) the first id of each window = its start position in data
    check_close(
        x, starts + torch.arange(T), what="each row of x (data = np.arange, so a window is consecutive ids)",
        reference="data[i : i + block_size]",
    )  # fmt: skip
    check_close(
        y, x + 1, what="y for the x drawn (y[b, t] must be data[i + t + 1], the token after x[b, t])",
        reference="data[i + 1 : i + 1 + block_size]",
        mistakes={
            "targets not shifted (y = x: the model is asked to copy its input, not predict the next token)": x,
            "targets shifted the wrong way (y = data[i - 1 : i - 1 + T])": x - 1,
        },
    )  # fmt: skip


def test_get_batch_covers_every_window_and_never_crosses_the_end(impl) -> None:
    """get_batch draws every start 0 .. N - T - 1, the last one included, and no window runs past the end"""
    T = 5
    data = np.arange(T + 4, dtype=np.uint16)  # N = T + 4: exactly 4 possible windows, starts 0..3
    x, y = _batch(impl, data, 400, T, seed=1)
    starts = sorted({int(s) for s in x[:, 0]})
    check(max(starts) <= 3, f"a window starts at {max(starts)}, but with N = {len(data)} and T = {T} the last full (x, y) pair starts at N - T - 1 = 3")
    if starts != [0, 1, 2, 3]:
        hint = ""
        if starts == [0, 1, 2]:
            hint = (
                "\n  Likely mistake: the last window is never drawn (torch.randint's upper bound is exclusive:"
                " torch.randint(len(data) - block_size, ...) gives starts 0 .. N - T - 1)."
            )
        fail(f"400 windows of a {len(data)}-token array with T = {T}: starts drawn {starts}, expected all of [0, 1, 2, 3]{hint}")
    check(bool((y == x + 1).all()), "y must be x shifted by one token (see the shapes-and-shift check)")


def test_get_batch_draws_from_the_generator(impl) -> None:
    """get_batch draws its positions from the generator it is given: the same seed gives the same batch"""
    data = np.arange(1000, dtype=np.uint16)
    a, _ = _batch(impl, data, 8, 4, seed=7)
    torch.manual_seed(123)  # the global RNG moves; a batch drawn from the generator must not care
    b, _ = _batch(impl, data, 8, 4, seed=7)
    c, _ = _batch(impl, data, 8, 4, seed=8)
    check(
        torch.equal(a, b),
        "two calls with generators seeded alike gave different batches: draw the start positions with"
        " torch.randint(..., generator=generator), not from the global RNG (resuming a run needs the data order"
        " to come from a generator whose state the checkpoint saves)",
    )
    check(not torch.equal(a, c), "generators with different seeds gave the same batch: the start positions must be random")


def test_get_batch_rejects_data_shorter_than_one_window(impl) -> None:
    """get_batch raises ValueError when the data holds fewer than block_size + 1 tokens"""
    expect_raises(
        ValueError, impl.get_batch, np.arange(8, dtype=np.uint16), 2, 8, "cpu", torch.Generator().manual_seed(0),
        what="get_batch on 8 tokens with block_size=8 (an (x, y) pair needs 9)",
    )  # fmt: skip


# ================================================================ Task 2: estimate_loss


class Probe(nn.Module):
    """Records how it is called; its 'loss' is the mean id of the batch / 100 (no randomness)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.drop = nn.Dropout(0.5)
        self.calls: list[dict[str, object]] = []

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        loss = ids.float().mean() / 100 + self.w * 0
        self.calls.append({"training": self.training, "grad": torch.is_grad_enabled(), "loss": float(loss), "min": int(ids.min())})
        return ids.float().unsqueeze(-1), loss


def _estimate(impl, model: nn.Module) -> dict[str, float]:
    data = {"train": np.arange(0, 100, dtype=np.uint16), "val": np.arange(1000, 1100, dtype=np.uint16)}
    out = impl.estimate_loss(model, data, 5, 4, 8, "cpu", torch.Generator().manual_seed(0))
    check(isinstance(out, dict), f"estimate_loss must return a dict split -> mean loss, got {type(out).__name__}")
    check(set(out) == {"train", "val"}, f"estimate_loss returned the keys {sorted(out)}, expected one per split: ['train', 'val']")
    return out


@pytest.mark.points(2)
def test_estimate_loss_is_the_mean_over_eval_iters_batches_per_split(impl) -> None:
    """estimate_loss returns, per split, the mean loss of eval_iters batches of that split"""
    model = Probe()
    model.train()
    out = _estimate(impl, model)
    for split, lo in (("train", 0), ("val", 1000)):
        mine = [c["loss"] for c in model.calls if (c["min"] >= 1000) == (lo == 1000)]
        check(len(mine) == 5, f"with eval_iters=5, expected 5 batches of the {split!r} split, got {len(mine)}")
        check_close(
            float(out[split]), float(np.mean(mine)), what=f"estimate_loss(...)[{split!r}]",
            reference=f"the mean of the 5 {split} losses the model returned", mistakes={
                "the sum of the losses instead of their mean": float(np.sum(mine)),
                "the last batch's loss instead of the mean": mine[-1],
            },
        )  # fmt: skip


def test_estimate_loss_runs_in_eval_mode_without_a_graph(impl) -> None:
    """estimate_loss runs the model in eval mode (no dropout) and under torch.no_grad"""
    model = Probe()
    model.train()
    _estimate(impl, model)
    check(model.calls, "estimate_loss never called the model")
    if any(c["training"] for c in model.calls):
        fail("the model was in train mode during evaluation, so dropout was still on: call model.eval() first"
             "\n  Likely mistake: evaluated without model.eval() (dropout on during evaluation).")
    if any(c["grad"] for c in model.calls):
        fail("gradients were enabled during evaluation: every forward built an autograd graph, costing memory"
             "\n  Likely mistake: eval without no_grad (wrap the evaluation in `with torch.no_grad():`).")


def test_estimate_loss_leaves_the_model_in_train_mode(impl) -> None:
    """estimate_loss leaves a model that was training in train mode"""
    model = Probe()
    model.train()
    _estimate(impl, model)
    if not model.training:
        fail("after estimate_loss the model is in eval mode, so training would continue without dropout"
             "\n  Likely mistake: left in eval mode (call model.train() at the end, or restore the mode it was in).")
    check(all(m.training for m in model.modules()), "some submodule was left in eval mode")


# ================================================================ Task 3: lr_at


def schedule(step: int, max_lr: float, min_lr: float, W: int, S: int, *, warmup: str = "right", floor: float | None = None,
             origin: str = "warmup", clamp: bool = True, clamp_to: float | None = None) -> float:  # fmt: skip
    """The formula of the lesson, and the variants the named mistakes produce."""
    lo = min_lr if floor is None else floor
    if step < W:
        return {"right": max_lr * (step + 1) / W, "zero-based": max_lr * step / W, "plus-one": max_lr * (step + 1) / (W + 1)}[warmup]
    if step > S and clamp:
        return lo if clamp_to is None else clamp_to
    start = W if origin == "warmup" else 0
    progress = (step - start) / (S - start)
    return lo + (max_lr - lo) * 0.5 * (1 + math.cos(math.pi * progress))


STEPS = [0, 1, 4, 9, 10, 11, 25, 55, 80, 99, 100, 101, 150]


@pytest.mark.points(2)
def test_schedule_matches_its_formula(impl) -> None:
    """lr_at follows linear warmup then cosine decay to min_lr, at fixed steps"""
    max_lr, min_lr, W, S = 1e-3, 1e-4, 10, 100
    got = torch.tensor([float(impl.lr_at(s, max_lr, min_lr, W, S)) for s in STEPS], dtype=torch.float64)

    def variant(**kw: object) -> torch.Tensor:
        return torch.tensor([schedule(s, max_lr, min_lr, W, S, **kw) for s in STEPS], dtype=torch.float64)  # type: ignore[arg-type]

    check_close(
        got, variant(), what=f"lr_at(step, max_lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100) at steps {STEPS}",
        atol=1e-12, rtol=1e-9, reference="max_lr*(step+1)/W, then min_lr + (max_lr-min_lr)*(1+cos(pi*(step-W)/(S-W)))/2",
        mistakes={
            "warmup off by one: max_lr * step / W, so step 0 has learning rate 0 and is wasted": variant(warmup="zero-based"),
            "warmup off by one: max_lr * (step + 1) / (W + 1), so the warmup never reaches max_lr": variant(warmup="plus-one"),
            "the cosine decays to 0 instead of to min_lr": variant(floor=0.0),
            "the cosine decays to 0 instead of to min_lr (then jumps to min_lr after max_steps)": variant(floor=0.0, clamp_to=min_lr),
            "the cosine is measured from step 0 instead of from the end of the warmup": variant(origin="zero"),
            "after max_steps the cosine rises again (clamp to min_lr past max_steps)": variant(clamp=False),
        },
    )  # fmt: skip


def test_schedule_without_warmup_starts_at_max_lr(impl) -> None:
    """with warmup_steps=0 the first step uses max_lr and the last reaches min_lr"""
    first = float(impl.lr_at(0, 1e-3, 1e-4, 0, 50))
    last = float(impl.lr_at(50, 1e-3, 1e-4, 0, 50))
    check_close(first, 1e-3, what="lr_at(0, 1e-3, 1e-4, warmup_steps=0, max_steps=50)", atol=1e-12, rtol=1e-9)
    check_close(last, 1e-4, what="lr_at(50, 1e-3, 1e-4, warmup_steps=0, max_steps=50)", atol=1e-12, rtol=1e-9)


# ================================================================ Task 4: param_groups, make_optimizer


class Groups(nn.Module):
    """TinyLM plus a frozen parameter and a bare 2-D Parameter (decayed: it is a weight matrix)."""

    def __init__(self) -> None:
        super().__init__()
        self.lm = TinyLM()
        self.frozen = nn.Linear(D, D)
        self.frozen.requires_grad_(False)
        self.mix = nn.Parameter(torch.randn(D, D))  # a weight matrix that is no Linear's


def _names(model: nn.Module, params: list[nn.Parameter]) -> list[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return sorted(by_id.get(id(p), "<not a parameter of the model>") for p in params)


def _groups(impl, model: nn.Module, wd: float) -> list[dict[str, object]]:
    groups = impl.param_groups(model, wd)
    check(isinstance(groups, list) and all(isinstance(g, dict) and "params" in g for g in groups),
          "param_groups must return a list of dicts, each with a 'params' list")  # fmt: skip
    return groups


def _cheap_optimizer_construction() -> None:
    """Constructing a torch.optim optimizer imports torch._dynamo (seconds) only to wrap add_param_group
    for torch.compile, which these checks never use: mark the wrapper as resolved. Harmless if torch changes."""
    fn = getattr(torch.optim.Optimizer.add_param_group, "__wrapped__", None)
    if fn is not None and not hasattr(fn, "__dynamo_disable"):
        try:
            setattr(fn, "__dynamo_disable", fn)
        except (AttributeError, TypeError):
            pass


@pytest.mark.points(2)
def test_parameter_groups_decay_only_weight_matrices(impl) -> None:
    """weight decay applies exactly to the >= 2-D weights: never to biases, LayerNorm or embeddings"""
    model = Groups()
    groups = _groups(impl, model, 0.1)
    decayed = sorted(n for g in groups if float(g.get("weight_decay", 0.0)) > 0 for n in _names(model, list(g["params"])))
    named = dict(model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    expected = ["lm.fc.weight", "mix"]
    if decayed == expected:
        return
    one_d = sorted(n for n in trainable if named[n].dim() < 2)
    emb = ["lm.pos_emb.weight", "lm.tok_emb.weight"]
    candidates = {
        "decay on LayerNorm or biases (every parameter decayed)": sorted(trainable),
        "decay on LayerNorm or biases (biases and LayerNorm parameters decayed, embeddings not)": sorted(set(expected) | set(one_d)),
        "decay on the embeddings (the >= 2-D rule alone decays the token and position tables)": sorted(expected + emb),
        "only nn.Linear weights decayed (a weight matrix that is not an nn.Linear's is missed)": ["lm.fc.weight"],
    }
    name = next((k for k, v in candidates.items() if v == decayed), None)
    fail(
        "parameters with weight decay > 0:\n"
        f"  expected: {expected}  (>= 2-D and owned by no nn.Embedding)\n"
        f"  got:      {decayed}\n"
        "  Biases and LayerNorm gains/shifts are few, 1-D, and have no reason to shrink toward 0 (a LayerNorm gain of 0"
        " switches its features off); an embedding row is trained only when its token occurs, but decay would shrink it"
        " every step." + (f"\n  Likely mistake: {name}." if name else "")
    )


def test_parameter_groups_hold_every_trainable_parameter_once(impl) -> None:
    """every trainable parameter is in exactly one group (the tied weight once); frozen ones in none"""
    model = Groups()
    groups = _groups(impl, model, 0.1)
    listed = [p for g in groups for p in g["params"]]
    ids = [id(p) for p in listed]
    dup = sorted({n for n in _names(model, listed) if ids.count(id(dict(model.named_parameters())[n])) > 1})
    check(not dup, f"these parameters appear more than once: {dup} (the tied lm_head.weight IS tok_emb.weight: collect"
                   " parameters, e.g. with model.parameters(), not module by module); AdamW refuses duplicates")  # fmt: skip
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    got = _names(model, listed)
    missing, extra = sorted(set(trainable) - set(got)), sorted(set(got) - set(trainable))
    check(not missing, f"trainable parameters in no group (they would never train): {missing}")
    check(not extra, f"parameters that should be in no group: {extra} (frozen parameters, requires_grad=False, are not optimised)")
    wds = sorted({float(g.get("weight_decay", -1.0)) for g in groups})
    check(wds == [0.0, 0.1], f"the groups' weight_decay values are {wds}; expected exactly [0.0, 0.1] (param_groups(model, 0.1))")
    _cheap_optimizer_construction()
    opt = impl.make_optimizer(model, 3e-4, 0.1, (0.9, 0.95))
    check(isinstance(opt, torch.optim.AdamW), f"make_optimizer must return a torch.optim.AdamW, got {type(opt).__name__}")
    lrs = {g["lr"] for g in opt.param_groups}
    betas = {tuple(g["betas"]) for g in opt.param_groups}
    check(lrs == {3e-4} and betas == {(0.9, 0.95)}, f"make_optimizer(model, 3e-4, 0.1, (0.9, 0.95)) built groups with lr {lrs}, betas {betas}")
    decayed = sorted(n for g in opt.param_groups if g["weight_decay"] > 0 for n in _names(model, g["params"]))
    check(decayed == ["lm.fc.weight", "mix"], f"make_optimizer's decayed parameters are {decayed}: build it from param_groups(model, weight_decay)")


# ================================================================ Task 5: clip_grad_norm


def _with_grads(scale: float) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(3)
    a = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 3))
    b = copy.deepcopy(a)
    for p, q in zip(a.parameters(), b.parameters(), strict=False):
        p.grad = torch.randn_like(p) * scale
        q.grad = p.grad.clone()
    return a, b


def _grads(m: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in m.parameters()])  # (P,)


@pytest.mark.points(2)
def test_clipping_equals_torch(impl) -> None:
    """clip_grad_norm scales all gradients together, equal to torch.nn.utils.clip_grad_norm_"""
    mine, ref = _with_grads(1.0)
    per_param = _with_grads(1.0)[0]
    total = impl.clip_grad_norm(mine.parameters(), 1.0)
    expected = nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
    for p in per_param.parameters():  # the mistake: each tensor clipped to max_norm on its own
        nn.utils.clip_grad_norm_([p], 1.0)
    check(isinstance(total, torch.Tensor | float), f"clip_grad_norm must return the total norm, got {type(total).__name__}")
    check_close(
        torch.as_tensor(total), expected, what="clip_grad_norm's return value (the total norm before clipping)",
        reference="torch.nn.utils.clip_grad_norm_", mistakes={"returned the norm after clipping (it is max_norm)": torch.tensor(1.0)},
    )  # fmt: skip
    check_close(
        _grads(mine), _grads(ref), what="the gradients after clip_grad_norm(parameters, max_norm=1.0), all parameters concatenated",
        reference="torch.nn.utils.clip_grad_norm_",
        mistakes={"each parameter's gradient clipped separately (per-parameter norms, not one total norm)": _grads(per_param)},
    )  # fmt: skip


def test_clipping_leaves_small_gradients_alone(impl) -> None:
    """clip_grad_norm leaves gradients whose total norm is below max_norm unchanged"""
    mine, ref = _with_grads(0.01)
    before = _grads(mine).clone()
    impl.clip_grad_norm(mine.parameters(), 1.0)
    total = float(nn.utils.clip_grad_norm_(ref.parameters(), 1.0))
    check_close(
        _grads(mine), before, what=f"gradients with total norm {total:.3g} < max_norm = 1 after clip_grad_norm",
        reference="unchanged (torch.nn.utils.clip_grad_norm_ scales by min(1, max_norm / total))",
        mistakes={"no min(1, ...): small gradients are scaled up to max_norm": before / total},
    )  # fmt: skip


# ================================================================ Task 6: precision, train_step


def _micro_batches(k: int = 3, B: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    return [(torch.randint(V, (B, BLOCK), generator=g), torch.randint(V, (B, BLOCK), generator=g)) for _ in range(k)]


def _flat(m: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in m.parameters()])  # (P,)


def _reference_steps(model: nn.Module, steps: list[list[tuple[torch.Tensor, torch.Tensor]]], lr: float, clip: float,
                     *, scale: float = 1.0, keep_grads: bool = False) -> nn.Module:  # fmt: skip
    """Plain-torch SGD steps: each step one backward over its micro-batches concatenated (the mean loss)."""
    ref = copy.deepcopy(model)
    opt = PlainSGD(ref.parameters(), lr=lr)
    for micro in steps:
        x = torch.cat([b[0] for b in micro])  # (k*B, T)
        y = torch.cat([b[1] for b in micro])  # (k*B, T)
        _, loss = ref(x, y)
        (loss * scale).backward()
        if clip > 0:
            nn.utils.clip_grad_norm_(ref.parameters(), clip)
        opt.step()
        if not keep_grads:
            opt.zero_grad(set_to_none=True)
    return ref


def test_precision_comes_from_stage_0_2(impl) -> None:
    """precision(device, amp) gives (None, a disabled scaler) without AMP and bfloat16 on the CPU with it"""
    dtype, scaler = impl.precision("cpu", False)
    check(dtype is None, f"precision('cpu', amp=False) returned dtype {dtype}; without AMP it is None (plain float32)")
    check(isinstance(scaler, torch.amp.GradScaler), f"precision must return a torch.amp.GradScaler, got {type(scaler).__name__}")
    dtype, scaler = impl.precision("cpu", True)
    check(dtype == torch.bfloat16, f"precision('cpu', amp=True) returned dtype {dtype}; stage 0.2's autocast_dtype('cpu') is torch.bfloat16")
    check(not scaler.is_enabled(), "the GradScaler is enabled for bfloat16: bfloat16 has float32's exponent range and needs no"
                                   " loss scaling (use stage 0.2's make_grad_scaler(device, dtype))")  # fmt: skip


@pytest.mark.points(2)
def test_gradient_accumulation_equals_one_big_batch(impl) -> None:
    """train_step on k micro-batches equals one step on their concatenation, and returns the mean loss"""
    model = tiny_model(dropout=0.0)
    micro = _micro_batches(3)
    ref = _reference_steps(model, [micro], lr=0.5, clip=0.0)
    mine = copy.deepcopy(model)
    opt = PlainSGD(mine.parameters(), lr=123.0)  # train_step(lr=0.5) must set it
    loss = impl.train_step(mine, opt, micro, lr=0.5, grad_clip=0.0)
    with torch.no_grad():
        expected_loss = float(np.mean([float(model(x, y)[1]) for x, y in micro]))
    check(all(g["lr"] == 0.5 for g in opt.param_groups), f"after train_step(lr=0.5) the optimizer's lr is {[g['lr'] for g in opt.param_groups]}; set every group's lr")
    check_close(
        _flat(mine), _flat(ref), what="parameters after one train_step over 3 micro-batches (SGD, lr 0.5)", atol=1e-6,
        reference="one SGD step on the 3 micro-batches concatenated",
        mistakes={"loss not divided by the number of micro-batches (the accumulated gradient is k times too large)":
                  lambda: _flat(_reference_steps(model, [micro], lr=0.5, clip=0.0, scale=3.0))},
    )  # fmt: skip
    check_close(float(loss), expected_loss, what="train_step's returned loss", reference="the mean of the micro-batch losses",
                mistakes={"returned the sum of the micro-batch losses": expected_loss * 3}, atol=1e-5)  # fmt: skip


@pytest.mark.points(2)
def test_consecutive_steps_start_from_zero_gradients(impl) -> None:
    """after train_step the gradients are cleared: two steps equal two independent plain-torch steps"""
    model = tiny_model(dropout=0.0)
    steps = [_micro_batches(1, 4), _micro_batches(1, 4)[::-1]]
    steps[1] = [(steps[1][0][1], steps[1][0][0])]  # a different batch for the second step
    ref = _reference_steps(model, steps, lr=0.3, clip=0.0)
    mine = copy.deepcopy(model)
    opt = PlainSGD(mine.parameters(), lr=0.3)
    for micro in steps:
        impl.train_step(mine, opt, micro, lr=0.3, grad_clip=0.0)
    check_close(
        _flat(mine), _flat(ref), what="parameters after two train_steps (SGD, lr 0.3)", atol=1e-6,
        reference="two plain-torch SGD steps, each from zero gradients",
        mistakes={"zero_grad missing: gradients accumulate across steps (the second step adds the first step's gradient again)":
                  lambda: _flat(_reference_steps(model, steps, lr=0.3, clip=0.0, keep_grads=True))},
    )  # fmt: skip
    leftover = [n for n, p in mine.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)]
    check(not leftover, f"after train_step these parameters still hold gradients: {leftover[:4]}; call optimizer.zero_grad(set_to_none=True)")


def test_train_step_clips_before_the_update(impl) -> None:
    """train_step clips the total gradient norm to grad_clip before the optimizer step"""
    model = tiny_model(dropout=0.0)
    micro = _micro_batches(2)
    ref = _reference_steps(model, [micro], lr=1.0, clip=0.05)
    mine = copy.deepcopy(model)
    opt = PlainSGD(mine.parameters(), lr=1.0)
    impl.train_step(mine, opt, micro, lr=1.0, grad_clip=0.05)
    check_close(
        _flat(mine), _flat(ref), what="parameters after train_step(grad_clip=0.05) (SGD, lr 1)", atol=1e-6,
        reference="backward, torch.nn.utils.clip_grad_norm_(0.05), SGD step",
        mistakes={"no clipping in train_step": lambda: _flat(_reference_steps(model, [micro], lr=1.0, clip=0.0))},
    )  # fmt: skip


def test_train_step_on_every_device_and_precision(impl, setting) -> None:
    """train_step runs on every device and under autocast, matching the float32 CPU step"""
    model = tiny_model(dropout=0.0)
    micro = _micro_batches(2)
    ref = _reference_steps(model, [micro], lr=0.1, clip=1.0)
    mine = setting.module(copy.deepcopy(model))
    opt = PlainSGD(mine.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(setting.device, enabled=setting.amp == "float16")
    batches = [(setting.tensor(x), setting.tensor(y)) for x, y in micro]
    impl.train_step(mine, opt, batches, lr=0.1, grad_clip=1.0, amp_dtype=setting.amp_dtype, scaler=scaler)
    setting.sync()
    check(next(mine.parameters()).device.type == setting.device, "the model left its device")
    check_close(_flat(mine).float().cpu(), _flat(ref), what=f"parameters after one train_step on {setting.id}", **setting.tol)


# ================================================================ Task 7: checkpoints


def _plain_steps(model: nn.Module, opt: PlainSGD, gen: torch.Generator, n: int) -> None:
    """n AdamW steps on batches drawn from ``gen``, with dropout drawing from torch's global RNG."""
    data = torch.from_numpy(repeated_corpus(200).astype(np.int64))
    model.train()
    for _ in range(n):
        ix = torch.randint(len(data) - BLOCK, (4,), generator=gen)
        x = torch.stack([data[i : i + BLOCK] for i in ix])  # (4, T)
        y = torch.stack([data[i + 1 : i + 1 + BLOCK] for i in ix])  # (4, T)
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def _fresh(seed: int) -> tuple[TinyLM, PlainAdam]:
    model = tiny_model(seed)
    return model, PlainAdam(model.parameters(), lr=1e-2)


CONFIG = {"vocab_size": V, "d_model": D, "block_size": BLOCK}
TOKENIZER = '{"merges": [], "special_tokens": {"<|endoftext|>": 16}}'


def _save(impl, path: Path, model: nn.Module, opt: PlainSGD, step: int, gen: torch.Generator) -> None:
    impl.save_checkpoint(path, model, opt, step, CONFIG, TOKENIZER, {"batch_size": 4}, gen)


@pytest.mark.points(3)
def test_checkpoint_resume_is_bit_identical(impl, tmp_path: Path) -> None:
    """save_checkpoint then load_checkpoint into a fresh model continues bit-identically (model, AdamW, RNG)"""
    model, opt = _fresh(0)
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(22)
    _plain_steps(model, opt, gen, 6)
    straight = _flat(model)

    model, opt = _fresh(0)
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(22)
    _plain_steps(model, opt, gen, 3)
    path = tmp_path / "ckpt.pt"
    _save(impl, path, model, opt, 3, gen)
    snapshot = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()), gen.get_state(), torch.get_rng_state())

    def resumed(restore_model: bool = True, restore_opt: bool = True, restore_gen: bool = True, restore_torch: bool = True) -> torch.Tensor:
        """The result of resuming with some of the state restored (the named mistakes restore less)."""
        m, o = _fresh(5)
        g = torch.Generator().manual_seed(99)
        torch.manual_seed(99)
        if restore_model:
            m.load_state_dict(snapshot[0])
        if restore_opt:
            o.load_state_dict(copy.deepcopy(snapshot[1]))  # AdamW adopts the tensors it is given: copy them
        if restore_gen:
            g.set_state(snapshot[2])
        if restore_torch:
            torch.set_rng_state(snapshot[3])
        _plain_steps(m, o, g, 3)
        return _flat(m)

    model, opt = _fresh(5)  # a different init, a scrambled RNG: everything must come from the file
    gen = torch.Generator().manual_seed(99)
    torch.manual_seed(99)
    ckpt = impl.load_checkpoint(path, model, opt, gen)
    check(isinstance(ckpt, dict), f"load_checkpoint must return the checkpoint dict, got {type(ckpt).__name__}")
    check(ckpt.get("step") == 3, f"the checkpoint's 'step' is {ckpt.get('step')!r}; it was saved after 3 steps")
    _plain_steps(model, opt, gen, 3)
    got = _flat(model)
    if torch.equal(got, straight):
        return
    check_close(
        got, straight, what="parameters after 3 steps + save + load + 3 steps (must equal 6 uninterrupted steps bit for bit)",
        atol=0.0, rtol=0.0, reference="6 uninterrupted steps", mistake_atol=0.0, mistake_rtol=0.0,
        mistakes={
            "RNG not saved (resume diverges): neither the data generator's nor torch's RNG state is restored":
                lambda: resumed(restore_gen=False, restore_torch=False),
            "RNG not saved (resume diverges): the data generator's state is not restored (generator.set_state)":
                lambda: resumed(restore_gen=False),
            "RNG not saved (resume diverges): torch's global RNG (dropout) is not restored (torch.set_rng_state)":
                lambda: resumed(restore_torch=False),
            "the optimizer state is not restored (AdamW's moments start again from zero)": lambda: resumed(restore_opt=False),
            "the model weights are not restored": lambda: resumed(restore_model=False),
        },
    )  # fmt: skip
    fail("parameters after resuming differ from the uninterrupted run, though every value is within 0: compare dtypes")


def test_checkpoint_holds_what_the_course_reads(impl, tmp_path: Path) -> None:
    """the checkpoint file holds model, optimizer, step, config, tokenizer (+ sha256), train_config and rng"""
    model, opt = _fresh(0)
    gen = torch.Generator().manual_seed(1)
    _plain_steps(model, opt, gen, 1)
    path = tmp_path / "run" / "checkpoint.pt"
    _save(impl, path, model, opt, 1, gen)
    check(path.is_file(), f"save_checkpoint did not create {path} (create the folder if it is missing)")
    leftovers = sorted(p.name for p in path.parent.iterdir() if p.name != path.name)
    check(not leftovers, f"save_checkpoint left other files beside the checkpoint: {leftovers} (remove the temporary file)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    check(isinstance(ckpt, dict), f"the checkpoint must be a dict written by torch.save, got {type(ckpt).__name__}")
    need = ["model", "optimizer", "step", "config", "tokenizer", "tokenizer_sha256", "train_config", "rng"]
    missing = [k for k in need if k not in ckpt]
    check(not missing, f"the checkpoint lacks the keys {missing}; nox -s generate and --resume read {need}")
    check(ckpt["step"] == 1 and ckpt["config"] == CONFIG and ckpt["train_config"] == {"batch_size": 4},
          "the checkpoint's step, config or train_config differ from what was passed to save_checkpoint")  # fmt: skip
    check(ckpt["tokenizer"] == TOKENIZER, "ckpt['tokenizer'] must be the tokenizer's JSON text exactly as given")
    sha = hashlib.sha256(TOKENIZER.encode("utf-8")).hexdigest()
    check(ckpt["tokenizer_sha256"] == sha, f"ckpt['tokenizer_sha256'] is {str(ckpt['tokenizer_sha256'])[:20]!r}, expected the hex sha256 of the UTF-8 text, {sha[:20]}...")
    sd = ckpt["model"]
    check(isinstance(sd, dict) and all(torch.equal(sd[k], v) for k, v in model.state_dict().items()), "ckpt['model'] must be model.state_dict()")
    check(isinstance(ckpt["optimizer"], dict) and "state" in ckpt["optimizer"], "ckpt['optimizer'] must be optimizer.state_dict()")


# ================================================================ Task 8: the training loop


def _cfg(impl, **kw: object):  # type: ignore[no-untyped-def]
    base = {"batch_size": 8, "block_size": BLOCK, "max_steps": 60, "max_lr": 2e-2, "min_lr": 2e-3, "warmup_steps": 5,
            "weight_decay": 0.0, "grad_clip": 1.0, "eval_interval": 0, "eval_iters": 2, "seed": 0}  # fmt: skip
    base.update(kw)
    return impl.TrainConfig(**base)


def _run(impl, cfg, model: nn.Module, start: int = 0, gen_seed: int = 3, stop_after: int | None = None,
         logs: list | None = None, data: dict | None = None):  # type: ignore[no-untyped-def]  # fmt: skip
    opt = PlainAdam(model.parameters(), lr=cfg.max_lr)
    gen = torch.Generator().manual_seed(gen_seed)
    data = data or {"train": repeated_corpus(600), "val": repeated_corpus(120)}
    seen: list = logs if logs is not None else []

    def should_stop() -> bool:
        return stop_after is not None and len(seen) >= stop_after

    done = impl.train(model, opt, data, cfg, device="cpu", start_step=start, generator=gen, on_step=seen.append, should_stop=should_stop)
    return done, opt, gen


@pytest.mark.points(2)
@pytest.mark.timeout(60)
def test_loss_falls_on_a_tiny_repeated_corpus(impl) -> None:
    """the training loop drives the loss down on a tiny repeated corpus within 60 steps"""
    logs: list = []
    model = tiny_model(0, dropout=0.0)
    done = _run(impl, _cfg(impl), model, logs=logs)[0]
    check(done == 60, f"train(..., max_steps=60) returned {done!r}; it returns the number of steps completed")
    check(len(logs) == 60, f"on_step was called {len(logs)} times in 60 steps; call it once after every optimizer step")
    first = float(np.mean([s.loss for s in logs[:5]]))
    last = float(np.mean([s.loss for s in logs[-5:]]))
    check(
        last < 0.35 * first,
        f"the mean training loss of the first 5 steps was {first:.3f} and of the last 5 steps {last:.3f}; a model this size"
        f" learns the repeated 12-token sentence and should be below {0.35 * first:.3f} (less than 35% of the start)"
        " — does each step call train_step with a fresh batch?",
    )


def test_loop_uses_the_schedule_and_evaluates(impl) -> None:
    """each step uses lr_at(step) (the first step is step 0) and evaluations come every eval_interval steps"""
    logs: list = []
    cfg = _cfg(impl, max_steps=12, warmup_steps=4, eval_interval=5)
    _run(impl, cfg, tiny_model(0), logs=logs)
    steps = [s.step for s in logs]
    check(steps == list(range(1, 13)), f"StepLog.step over a 12-step run: {steps}; expected 1 .. 12 (steps completed)")
    got = torch.tensor([s.lr for s in logs], dtype=torch.float64)
    expected = torch.tensor([schedule(s, cfg.max_lr, cfg.min_lr, 4, 12) for s in range(12)], dtype=torch.float64)
    check_close(
        got, expected, what="the learning rates of steps 0 .. 11 (StepLog.lr)", atol=1e-12, rtol=1e-9,
        reference="lr_at(step, ...) for step = 0, 1, ... (steps completed before this one)",
        mistakes={"the loop calls lr_at(step + 1, ...): its first step is counted as 1, not 0":
                  torch.tensor([schedule(s + 1, cfg.max_lr, cfg.min_lr, 4, 12) for s in range(12)], dtype=torch.float64)},
    )  # fmt: skip
    evals = [s.step for s in logs if s.val is not None]
    check(evals == [5, 10, 12], f"evaluations after steps {evals}; with eval_interval=5 and max_steps=12 expected [5, 10, 12] (the last step too)")
    check(all(set(s.val) == {"train", "val"} for s in logs if s.val), "each evaluation gives a loss for every split: {'train': ..., 'val': ...}")


@pytest.mark.points(3)
@pytest.mark.timeout(60)
def test_interrupted_and_resumed_training_is_bit_identical(impl, tmp_path: Path) -> None:
    """train stopped after 4 steps, checkpointed and resumed equals 8 uninterrupted steps, bit for bit"""
    cfg = _cfg(impl, max_steps=8, eval_interval=4, grad_accum=2)
    torch.manual_seed(7)
    straight_model = tiny_model(0)
    torch.manual_seed(7)
    _run(impl, cfg, straight_model)
    straight = _flat(straight_model)

    model = tiny_model(0)
    torch.manual_seed(7)
    done, opt, gen = _run(impl, cfg, model, stop_after=4)
    check(done == 4, f"train with should_stop() true after 4 steps returned {done!r}; it must stop there and return 4")
    path = tmp_path / "ckpt.pt"
    _save(impl, path, model, opt, done, gen)

    model2 = tiny_model(9)
    torch.manual_seed(99)
    opt2 = PlainAdam(model2.parameters(), lr=cfg.max_lr)
    gen2 = torch.Generator().manual_seed(99)
    ckpt = impl.load_checkpoint(path, model2, opt2, gen2)
    data = {"train": repeated_corpus(600), "val": repeated_corpus(120)}
    logs: list = []
    impl.train(model2, opt2, data, cfg, device="cpu", start_step=int(ckpt["step"]), generator=gen2, on_step=logs.append)
    check([s.step for s in logs] == [5, 6, 7, 8], f"resumed from step 4, the loop reported steps {[s.step for s in logs]}; expected [5, 6, 7, 8]")
    if not torch.equal(_flat(model2), straight):
        diff = float((_flat(model2) - straight).abs().max())
        fail(
            f"after resuming, the parameters differ from the uninterrupted run by up to {diff:.3g}. The loop must draw every"
            " batch from `generator` (get_batch(..., generator)), take its learning rate from the step number (lr_at(step))"
            " and keep no other state between steps; evaluation must not consume the training generator."
            " (If the checkpoint check above fails too, fix that first.)"
        )
