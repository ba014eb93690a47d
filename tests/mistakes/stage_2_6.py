from tests.mistakes import Mistake

MISTAKES = [
    Mistake(
        "2.6", "gradients summed instead of averaged",
        "        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)\n        p.grad.div_(world)",
        "        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)",
        "summed instead of averaged", check="one_process",
    ),
    Mistake(
        "2.6", "no broadcast at start",
        "            dist.broadcast(t.data, src=src)",
        "            pass",
        "no broadcast at start", check="broadcast",
    ),
    Mistake(
        "2.6", "buffers not broadcast",
        "for t in list(model.parameters()) + list(model.buffers()):",
        "for t in list(model.parameters()):",
        "buffers not broadcast", check="broadcast",
    ),
    Mistake(
        "2.6", "every rank sees the same shard",
        "return perm[rank::world_size].tolist()",
        "return perm[: n // world_size].tolist()",
        "every rank sees the same shard", check="shards",
    ),
    Mistake(
        "2.6", "no reshuffle per epoch",
        "g = torch.Generator().manual_seed(seed + epoch)",
        "g = torch.Generator().manual_seed(seed)",
        "no reshuffle per epoch", check="shards",
    ),
    Mistake(
        "2.6", "all-reduce on every micro-step of accumulation",
        "        loss.backward()\n    if bucket_size is None:\n        allreduce_gradients(model)\n    else:\n        allreduce_gradients_bucketed(model, bucket_size)",
        "        loss.backward()\n        allreduce_gradients(model)",
        "all-reduce on every micro-step", check="micro_step",
    ),
    Mistake(
        "2.6", "bucket never copied back",
        "            g.copy_(flat[offset : offset + g.numel()].view_as(g))  # (*g.shape)",
        "            flat[offset : offset + g.numel()].view_as(g)  # (*g.shape)",
        "never copied back", check="bucketed",
    ),
    Mistake(
        "2.6", "every rank writes the checkpoint",
        "    if dist.get_rank() == 0:\n        path.parent.mkdir(parents=True, exist_ok=True)",
        "    if True:\n        path.parent.mkdir(parents=True, exist_ok=True)",
        "every rank writes the checkpoint", check="checkpoint",
    ),
    Mistake(
        "2.6", "no barrier after rank 0 writes the checkpoint",
        "            tmp.unlink(missing_ok=True)\n    dist.barrier()",
        "            tmp.unlink(missing_ok=True)",
        "no barrier after rank 0's write", check="checkpoint",
    ),
    Mistake(
        "2.6", "a missing barrier before rank 0 reads what others wrote",
        "    os.replace(tmp, folder / f\"rank-{rank}.json\")\n    dist.barrier()",
        "    os.replace(tmp, folder / f\"rank-{rank}.json\")",
        "missing barrier before rank 0 reads", check="reads",
    ),
]
