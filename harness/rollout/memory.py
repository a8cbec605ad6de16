"""How many rows to decode at once, and how much memory the prefix stash may hold, from what is free."""

from __future__ import annotations

import os

# Rows past which a CPU step stops getting cheaper per token (matmuls are FLOP-bound by then), and a
# generous cap for accelerators.
CPU_MAX_ROWS = 32
ACCELERATOR_MAX_ROWS = 256
ROW_TOKENS = 2048  # a row's budget: prompt + every attempt so far + the new one
MEMORY_SHARE = 0.25  # of the free memory, for the batch cache; as much again for the stash


def kv_bytes_per_token(model) -> int:
    config = model.config
    text = getattr(config, "text_config", config)
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    element = next(model.parameters()).element_size()
    return 2 * text.num_hidden_layers * heads * head_dim * element


def free_bytes(device) -> int:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            info = dict(line.split(":", 1) for line in fh)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def auto_batch_size(model) -> int:
    """As many rows as a quarter of the free memory holds at ROW_TOKENS each, within the device's cap."""
    device = model.device
    per_row = kv_bytes_per_token(model) * ROW_TOKENS
    fits = int(free_bytes(device) * MEMORY_SHARE // per_row)
    cap = CPU_MAX_ROWS if device.type == "cpu" else ACCELERATOR_MAX_ROWS
    return max(1, min(cap, fits))


def stash_budget(model) -> int:
    return int(free_bytes(model.device) * MEMORY_SHARE)
