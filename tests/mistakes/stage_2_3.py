from tests.mistakes import Mistake

MISTAKES = [
    Mistake(
        "2.3", "targets not shifted",
        "y = torch.stack([torch.from_numpy(np.asarray(data[i + 1 : i + 1 + block_size], dtype=np.int64))",
        "y = torch.stack([torch.from_numpy(np.asarray(data[i : i + block_size], dtype=np.int64))",
        "targets not shifted", check="get_batch",
    ),
    Mistake(
        "2.3", "the last window is never drawn",
        "starts = torch.randint(n - block_size, (batch_size,), generator=generator)",
        "starts = torch.randint(n - block_size - 1, (batch_size,), generator=generator)",
        "the last window is never drawn", check="get_batch",
    ),
    Mistake(
        "2.3", "positions drawn from the global RNG",
        "starts = torch.randint(n - block_size, (batch_size,), generator=generator)",
        "starts = torch.randint(n - block_size, (batch_size,))",
        "not from the global RNG", check="get_batch",
    ),
    Mistake(
        "2.3", "eval without no_grad",
        "with torch.no_grad():\n            for split, ids in data.items():",
        "with torch.enable_grad():\n            for split, ids in data.items():",
        "eval without no_grad", check="estimate_loss",
    ),
    Mistake(
        "2.3", "left in eval mode",
        "        model.train(was_training)\n    return out",
        "        pass\n    return out",
        "left in eval mode", check="estimate_loss",
    ),
    Mistake(
        "2.3", "evaluated with dropout on",
        "    model.eval()\n    out: dict[str, float] = {}",
        "    out: dict[str, float] = {}",
        "without model.eval()", check="estimate_loss",
    ),
    Mistake(
        "2.3", "warmup off by one",
        "return max_lr * (step + 1) / warmup_steps",
        "return max_lr * step / warmup_steps",
        "warmup off by one", check="schedule",
    ),
    Mistake(
        "2.3", "the cosine decays to 0",
        "return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))",
        "return max_lr * 0.5 * (1.0 + math.cos(math.pi * progress))",
        "decays to 0 instead of to min_lr", check="schedule",
    ),
    Mistake(
        "2.3", "decay on LayerNorm or biases",
        "if p.dim() >= 2 and id(p) not in embedding:",
        "if True:",
        "decay on LayerNorm or biases", check="parameter",
    ),
    Mistake(
        "2.3", "decay on the embeddings",
        "if p.dim() >= 2 and id(p) not in embedding:",
        "if p.dim() >= 2:",
        "decay on the embeddings", check="parameter",
    ),
    Mistake(
        "2.3", "each parameter clipped separately",
        "    for g in grads:\n        g.detach().mul_(coef.to(g.device))\n    return total",
        "    for g in grads:\n        g.detach().mul_(torch.clamp(max_norm / (torch.linalg.vector_norm(g) + 1e-6), max=1.0))\n    return total",
        "clipped separately", check="clipping",
    ),
    Mistake(
        "2.3", "small gradients scaled up",
        "coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)",
        "coef = max_norm / (total + 1e-6)",
        "small gradients are scaled up", check="clipping",
    ),
    Mistake(
        "2.3", "scaler enabled for bfloat16",
        "return dtype, env.make_grad_scaler(device, dtype)",
        "return dtype, torch.amp.GradScaler(torch.device(device).type)",
        "needs no loss scaling", check="precision",
    ),
    Mistake(
        "2.3", "zero_grad missing",
        "    optimizer.zero_grad(set_to_none=True)\n    return total",
        "    return total",
        "zero_grad missing", check="train_step or zero_gradients or accumulation",
    ),
    Mistake(
        "2.3", "loss not divided by the number of micro-batches",
        "loss = loss.float() / k  # each micro-batch adds 1/k of the mean gradient",
        "loss = loss.float()",
        "loss not divided by the number of micro-batches", check="accumulation",
    ),
    Mistake(
        "2.3", "no clipping in train_step",
        "    if grad_clip > 0:\n        clip_grad_norm(model.parameters(), grad_clip)\n",
        "",
        "no clipping in train_step", check="clips",
    ),
    Mistake(
        "2.3", "RNG not saved",
        '"generator": generator.get_state() if generator is not None else None,',
        '"generator": None,',
        "RNG not saved", check="checkpoint",
    ),
    Mistake(
        "2.3", "torch's RNG not restored",
        '    torch.set_rng_state(state["torch"])\n',
        "",
        "torch's global RNG (dropout) is not restored", check="checkpoint",
    ),
    Mistake(
        "2.3", "optimizer state not restored",
        '        optimizer.load_state_dict(ckpt["optimizer"])\n',
        "        pass\n",
        "the optimizer state is not restored", check="checkpoint",
    ),
    Mistake(
        "2.3", "the loop counts steps from 1",
        "lr = lr_at(step, cfg.max_lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps)",
        "lr = lr_at(step + 1, cfg.max_lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps)",
        "lr_at(step + 1, ...)", check="loop",
    ),
]
