"""Stage 1.6's pictures (``nox -s show -- 1.6``): your Transformer learning to reverse sequences.

Each ``data`` function runs the stage's module ``m`` (yours or the reference); see shared/figures.py.
``_train`` repeats the given ``train_reverse`` (same seed, data, model size and schedule as the graded
learnability check) and also records the loss at every step; the attention maps are read from the
trained model's last decoder block by calling its ``self_attn`` / ``cross_attn`` again, on the inputs
your DecoderBlock gave them, with ``need_weights=True``.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import torch
from torch import nn

from shared.figures import Figure, heatmap, to_numpy

STEPS, LR, BATCH, SEED, VOCAB, LENGTH = 100, 1e-2, 128, 0, 10, 5  # as the graded check's train_reverse(...)


@functools.lru_cache(maxsize=4)
def _train(m: ModuleType) -> dict[str, Any]:
    """Train your Transformer on the reverse task; the losses, and the attention on one held-out example."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast, and the same on every machine
    try:
        with torch.random.fork_rng(devices=[]):
            return _train_body(m)
    finally:
        torch.set_num_threads(threads)


def _train_body(m: ModuleType) -> dict[str, Any]:
    torch.manual_seed(SEED)
    train, test = m.reverse_task_data(VOCAB, LENGTH, seed=SEED)
    config = m.TransformerConfig(
        src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, d_model=32, n_heads=4,
        n_encoder_layers=1, n_decoder_layers=1, d_ff=64, dropout=0.0, norm_first=True, max_len=LENGTH + 2,
    )  # fmt: skip
    model = m.Transformer(config)
    adam = m._Adam(list(model.parameters()), lr=LR)
    g = torch.Generator().manual_seed(SEED)
    losses = []
    model.train()
    for step in range(1, STEPS + 1):
        src = train[torch.randint(len(train), (BATCH,), generator=g)]  # (B, L)
        rev = src.flip(1)  # (B, L)
        tgt_in = torch.cat([torch.full_like(src[:, :1], m.BOS), rev], dim=1)  # (B, L+1)
        tgt_out = torch.cat([rev, torch.full_like(src[:, :1], m.EOS)], dim=1)  # (B, L+1)
        logits = model(src, tgt_in)  # (B, L+1, V)
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tgt_out.reshape(-1))  # (B*(L+1), V)
        model.zero_grad(set_to_none=True)
        loss.backward()
        adam.lr = LR * (1 - (step - 1) / STEPS)
        adam.step()
        losses.append(float(loss.detach()))
    model.eval()

    src = test[:1]  # (1, L) one held-out example
    tgt_in = torch.cat([torch.full_like(src[:, :1], m.BOS), src.flip(1)], dim=1)  # (1, L+1)
    out: dict[str, Any] = {"loss": to_numpy(torch.tensor(losses)), "source": src[0].tolist(),
                           "target_in": ["BOS"] + [str(t) for t in src[0].flip(0).tolist()]}  # fmt: skip
    try:
        out.update(_attention_maps(model, src, tgt_in))
    except (AttributeError, IndexError, KeyError, TypeError) as exc:  # a model laid out differently from the docstrings
        out["attention_error"] = f"could not read the last decoder block's attention weights: {type(exc).__name__}: {exc}"
    try:
        out["exact_match"] = float(m.exact_match(model, test, test.flip(1)))
        ids = m.greedy_decode(model, src, max_len=LENGTH + 2, bos_id=m.BOS, eos_id=m.EOS)[0].tolist()
        names = {m.PAD: "PAD", m.BOS: "BOS", m.EOS: "EOS"}
        out["decoded"] = [names.get(t, str(t)) for t in ids]
    except NotImplementedError:  # greedy decoding (Task 5) not written yet: the other pictures still show
        pass
    return out


def _attention_maps(model: Any, src: torch.Tensor, tgt_in: torch.Tensor) -> dict[str, Any]:
    """Averaged weights of model.decoder.layers[-1].self_attn / .cross_attn on one example, on the inputs they got."""
    block = model.decoder.layers[-1]
    seen: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}

    def recorder(name: str) -> Any:
        def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            seen.setdefault(name, (args, kwargs))  # returns None: the call itself is left unchanged

        return hook

    hooks = [getattr(block, n).register_forward_pre_hook(recorder(n), with_kwargs=True) for n in ("self_attn", "cross_attn")]
    try:
        with torch.no_grad():
            model(src, tgt_in)
    finally:
        for h in hooks:
            h.remove()
    maps = {}
    with torch.no_grad():
        for name in ("self_attn", "cross_attn"):
            args, kwargs = seen[name]  # what your DecoderBlock passed
            _, w = getattr(block, name)(*args, **{**kwargs, "need_weights": True, "average_attn_weights": True})
            maps[name] = to_numpy(w[0])  # (T, T) or (T, S)
    return maps


def _maps(m: ModuleType) -> dict[str, Any]:
    d = _train(m)
    if "attention_error" in d:
        raise RuntimeError(d["attention_error"])
    return d


def loss_data(m: ModuleType) -> dict[str, Any]:
    d = _train(m)
    return {"loss": d["loss"], **({"exact_match": d["exact_match"]} if "exact_match" in d else {})}


def draw_loss(panel: Any, data: dict[str, Any]) -> None:
    ax = panel.subplots()
    loss = data["loss"]
    ax.plot(range(1, len(loss) + 1), loss, lw=1.4)
    ax.set_yscale("log")
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("cross-entropy (nats/token)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, which="both")
    note = f"final loss {loss[-1]:.3f}"
    if "exact_match" in data:
        note += f"\nheld-out exact match {data['exact_match']:.0%}"
    ax.text(0.97, 0.95, note, transform=ax.transAxes, ha="right", va="top", fontsize=8)


def cross_data(m: ModuleType) -> dict[str, Any]:
    d = _maps(m)
    out = {k: d[k] for k in ("cross_attn", "source", "target_in")}
    if "decoded" in d:
        out["decoded"] = d["decoded"]
    return out


def draw_cross(panel: Any, data: dict[str, Any]) -> None:
    ax = panel.subplots()
    heatmap(ax, data["cross_attn"], cmap="Greens", vmin=0, vmax=1, xlabel="source token (encoder)",
            ylabel="decoder input", xticks=[str(t) for t in data["source"]], yticks=data["target_in"])  # fmt: skip
    if "decoded" in data:
        ax.set_title("greedy output: " + " ".join(data["decoded"]), fontsize=8)


def self_data(m: ModuleType) -> dict[str, Any]:
    d = _maps(m)
    return {k: d[k] for k in ("self_attn", "target_in")}


def draw_self(panel: Any, data: dict[str, Any]) -> None:
    ax = panel.subplots()
    heatmap(ax, data["self_attn"], cmap="Greens", vmin=0, vmax=1, xlabel="key (decoder input)",
            ylabel="query (decoder input)", xticks=data["target_in"], yticks=data["target_in"])  # fmt: skip


FIGURES: list[Figure] = [
    Figure(
        "reverse-loss", "Training on the reverse task: the loss", loss_data, draw_loss,
        caption="The loss over train_reverse's 100 steps (seed 0): from about 3 nats per token to under 0.01.",
        size=(4.2, 3.0), digits=2,
    ),
    Figure(
        "cross-attention", "Trained cross-attention: the anti-diagonal", cross_data, draw_cross,
        caption="To write the reversed sequence, output position t reads source position L - 1 - t: the anti-diagonal.",
        size=(3.8, 3.2), digits=2,
    ),
    Figure(
        "decoder-self-attention", "Trained decoder self-attention: causal", self_data, draw_self,
        caption="The decoder's self-attention never looks right of the diagonal: the causal mask at work.",
        size=(3.8, 3.2), digits=2,
    ),
]  # fmt: skip
