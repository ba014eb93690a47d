from tests.mistakes import Mistake

MISTAKES = [
    Mistake(
        "0.2", "mps preferred over cuda",
        'DEVICE_ORDER: tuple[str, ...] = ("cuda", "mps", "cpu")',
        'DEVICE_ORDER: tuple[str, ...] = ("mps", "cuda", "cpu")',
        "mps preferred over cuda", check="auto_choice",
    ),
    Mistake(
        "0.2", "cpu chosen although cuda is available",
        'DEVICE_ORDER: tuple[str, ...] = ("cuda", "mps", "cpu")',
        'DEVICE_ORDER: tuple[str, ...] = ("mps", "cpu")',
        "cpu chosen although cuda is available", check="auto_choice",
    ),
    Mistake(
        "0.2", "silent fallback to cpu",
        "    if not _available(kind):\n        raise RuntimeError(",
        '    if not _available(kind):\n        return torch.device("cpu")\n        raise RuntimeError(',
        "silent fallback to cpu", check="absent_device",
    ),
    Mistake(
        "0.2", "unknown name passed straight to torch.device",
        "    if kind not in DEVICE_ORDER:\n        raise ValueError(",
        "    if kind not in DEVICE_ORDER:\n        return torch.device(prefer)\n        raise ValueError(",
        "passed straight to torch.device", check="unknown_name",
    ),
    Mistake(
        "0.2", "fp16 chosen on CPU",
        'if kind == "cpu":\n        return torch.bfloat16',
        'if kind == "cpu":\n        return torch.float16',
        "fp16 chosen on CPU", check="dtype_table",
    ),
    Mistake(
        "0.2", "bf16 chosen on a GPU without bf16 in hardware",
        "torch.cuda.is_bf16_supported(including_emulation=False)",
        "torch.cuda.is_bf16_supported()",
        "bf16 chosen on a GPU without bf16 in hardware", check="dtype_table",
    ),
    Mistake(
        "0.2", "fp16 on every Mac",
        "return torch.bfloat16 if _mps_has_bf16() else torch.float16",
        "return torch.float16",
        "fp16 on every Mac", check="dtype_mps",
    ),
    Mistake(
        "0.2", "GradScaler used for bf16",
        "enabled=dtype == torch.float16)",
        "enabled=dtype in (torch.float16, torch.bfloat16))",
        "GradScaler used for bf16", check="grad_scaler_decision",
    ),
    Mistake(
        "0.2", "GradScaler not used for fp16",
        "enabled=dtype == torch.float16)",
        "enabled=False)",
        "GradScaler not used for fp16", check="grad_scaler_decision",
    ),
    Mistake(
        "0.2", "GradScaler ignored in the training step",
        "if scaler is not None and scaler.is_enabled():",
        "if False:",
        "GradScaler not used for fp16", check="uses_the_scaler",
    ),
    Mistake(
        "0.2", "clipping before unscale_",
        "        scaler.unscale_(optimizer)  # ... divided back, so clipping sees true gradients\n"
        "        nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)\n",
        "        nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)\n"
        "        scaler.unscale_(optimizer)  # ... divided back, so clipping sees true gradients\n",
        "clipping before unscale_", check="unscaled_before_clipping",
    ),
    Mistake(
        "0.2", "optimizer stepped twice",
        "        scaler.step(optimizer)  # skips the step if any gradient is inf/NaN\n",
        "        scaler.step(optimizer)  # skips the step if any gradient is inf/NaN\n        optimizer.step()\n",
        "optimizer stepped twice", check="unscaled_before_clipping",
    ),
    Mistake(
        "0.2", "returned the scaled loss",
        "        scaler.scale(loss).backward()  # gradients are multiplied by the scale\n",
        "        loss = scaler.scale(loss)\n        loss.backward()  # gradients are multiplied by the scale\n",
        "returned the scaled loss", check="unscaled_before_clipping",
    ),
    Mistake(
        "0.2", "gradients not zeroed between steps",
        "    optimizer.zero_grad(set_to_none=True)\n    return loss.item()",
        "    return loss.item()",
        "gradients not zeroed between steps", check="plain_steps",
    ),
    Mistake(
        "0.2", "returned the loss tensor",
        "    optimizer.zero_grad(set_to_none=True)\n    return loss.item()",
        "    optimizer.zero_grad(set_to_none=True)\n    return loss",
        "returned the loss tensor instead of loss.item()", check="plain_steps",
    ),
    Mistake(
        "0.2", "n³ FLOPs instead of 2n³",
        "return 2 * n**3 / seconds_per_matmul / 1e12",
        "return n**3 / seconds_per_matmul / 1e12",
        "n³ FLOPs instead of 2n³", check="tflops_formula",
    ),
    Mistake(
        "0.2", "time not divided by the repeats",
        "seconds_per_matmul = (time.perf_counter() - start) / repeats",
        "seconds_per_matmul = time.perf_counter() - start",
        "not divided by the number of repeats", check="tflops_formula",
    ),
    Mistake(
        "0.2", "GFLOP/s instead of TFLOP/s",
        "return 2 * n**3 / seconds_per_matmul / 1e12",
        "return 2 * n**3 / seconds_per_matmul / 1e9",
        "GFLOP/s instead of TFLOP/s", check="tflops_formula",
    ),
    Mistake(
        "0.2", "no warm-up",
        "    a @ b  # warm-up, not timed\n",
        "",
        "no warm-up", check="tflops_warm_up",
    ),
    Mistake(
        "0.2", "warm-up inside the timed region",
        "    a @ b  # warm-up, not timed\n    _synchronize(device)\n    start = time.perf_counter()\n",
        "    _synchronize(device)\n    start = time.perf_counter()\n    a @ b  # warm-up, not timed\n",
        "warm-up matmul is inside the timed region", check="tflops_formula",
    ),
    Mistake(
        "0.2", "ranked by total time instead of self time",
        'key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"',
        'key = "device_time_total" if device.type == "cuda" else "cpu_time_total"',
        "ranked by total time", check="profile_uses_self_time",
    ),
    Mistake(
        "0.2", "prefer ignored",
        'if prefer is None or prefer == "auto":',
        "if True:",
        "prefer ignored", check="explicit_choice",
    ),
    Mistake(
        "0.2", "no optimizer step",
        "        nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)\n        optimizer.step()\n",
        "        nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)\n",
        "should lower the loss", check="lower_the_loss",
    ),
    Mistake(
        "0.2", "clock readings subtracted the wrong way round",
        "seconds_per_matmul = (time.perf_counter() - start) / repeats",
        "seconds_per_matmul = (start - time.perf_counter()) / repeats",
        "expected a positive finite rate", check="on_this_device",
    ),
    Mistake(
        "0.2", "fn called outside the profiler",
        "    with torch.profiler.profile(activities=_activities(device)) as prof:\n        fn()\n        _synchronize(device)\n"
        "    key = ",
        "    fn()\n    with torch.profiler.profile(activities=_activities(device)) as prof:\n        _synchronize(device)\n"
        "    key = ",
        "was fn called inside the profiler", check="names_the_matmul",
    ),
    Mistake(
        "0.2", "trace path not returned",
        "    prof.export_chrome_trace(str(path))\n    return path",
        "    prof.export_chrome_trace(str(path))",
        "must return the path", check="chrome_trace",
    ),
]
