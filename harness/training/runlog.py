"""What a training run records beside its checkpoints: each step's rewards as the paper tables measure
them, averaged over processes; its log.jsonl cut back to the checkpoint a resume restarts from; and the
check that a resumed run reads the data it started with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.errors import HarnessError, warn
from harness.metrics import statistics
from harness.rollout.episode import Episode
from harness.store import RunStore


def step_metrics(episodes: list[Episode]) -> dict[str, float]:
    """The step's rewards as the paper tables measure them (harness.metrics), and its generated tokens."""
    if not episodes:
        return {}
    r1, r2, delta, i_to_c, c_to_i = statistics(np.array([e.correct[:2] for e in episodes], dtype=bool))
    return {"r1": float(r1), "r2": float(r2), "delta": float(delta), "i_to_c": float(i_to_c), "c_to_i": float(c_to_i),
            "tokens": float(sum(s.completion_tokens for e in episodes for s in e.steps))}


def check_same_data(store: RunStore, data_files: dict[str, str]) -> None:
    """A resumed run must read the same data files (by sha256) as the run it continues (a damaged
    manifest is rewritten: the config check already matched the settings)."""
    before = store.read_manifest().get("data_sha256")
    if not isinstance(before, dict) or not data_files:
        return
    changed = sorted(k for k, v in data_files.items() if k in before and before[k] != v)
    if changed:
        raise HarnessError(f"{store.root}: the data changed since the run started ({', '.join(changed)} has another "
                           "sha256); a resumed run needs the same data")


def gather_mean(accel, stats: dict[str, float]) -> dict[str, float]:
    if accel.num_processes == 1:
        return stats
    values = torch.tensor(list(stats.values()), device=accel.device)
    return dict(zip(stats, accel.reduce(values, "mean").tolist()))


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint a resumed run restarts from (they are redone), and lines a
    killed write tore or the disk damaged (saying so in one line)."""
    if not path.is_file():
        return
    from harness.store import BadLine, atomic_write_bytes, scan_jsonl

    data = path.read_bytes()
    lines, torn = scan_jsonl(data)
    kept, damaged = [], 0
    for _, raw, record in lines:
        if isinstance(record, BadLine) or not isinstance(record.get("step"), (int, float)):
            damaged += 1
        elif record["step"] <= step:
            kept.append(raw + b"\n")
    if torn or damaged:
        warn(f"{path}: cut {'a torn last line' if torn else ''}{' and ' if torn and damaged else ''}"
             f"{f'{damaged} damaged line(s)' if damaged else ''}; the steps after checkpoint {step} are redone")
    new = b"".join(kept)
    if new != data:
        atomic_write_bytes(path, new)


def status_line(logs: dict[str, float], budget: int = 0) -> str:
    """One line for a progress display: a step's rewards, KL, loss, time and tokens spent, or how far a
    budgeted SFT collection is."""
    if "collect_share" in logs:
        return f"collecting {logs['collected_tokens']:,.0f}/{logs['collect_share']:,.0f} tokens"
    kl = logs.get("kl1", 0.0) + logs.get("kl2", 0.0)
    parts = [f"r1 {logs['r1']:.2f}" if "r1" in logs else "", f"r2 {logs['r2']:.2f}" if "r2" in logs else "",
             f"Δ {logs['delta']:+.2f}" if "delta" in logs else "", f"KL {kl:.3f}" if kl else "",
             f"loss {logs['loss']:.3f}" if "loss" in logs else "",
             f"{logs['step_s']:.1f}s/step" if "step_s" in logs else "",
             f"{logs['rollout_tokens_total']:,.0f}/{budget:,} tokens" if budget and "rollout_tokens_total" in logs else ""]
    return "  ".join(p for p in parts if p)
