"""What every result file carries: package versions, git commit, config, seed, data sha256, model id."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness.task import GRADER_VERSION

PACKAGES = ("selfcorrect-harness", "torch", "transformers", "accelerate", "peft", "datasets", "math-verify",
            "safetensors", "tokenizers", "numpy", "pandas")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def git_state(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def host() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"node": platform.node(), "platform": platform.platform(), "python": sys.version.split()[0],
                            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def build_manifest(config: dict[str, Any], seed: int, model: dict[str, Any], data_files: dict[str, str]) -> dict[str, Any]:
    return {
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "git": git_state(),
        "packages": package_versions(),
        "grader_version": GRADER_VERSION,
        "host": host(),
        "seed": seed,
        "model": model,
        "data_sha256": data_files,
        "config": config,
    }
