"""Checkpoints as safetensors: trainable weights, optimizer state, method state and RNG states, plus
a JSON of counters. Written to a temp folder, fsynced and renamed, so a killed save never looks
complete; trainer_state.json (written last) holds each file's sha256, so a checkpoint damaged later
is recognised, and resume falls back to the newest intact one. Each records the mean training reward of
the steps since the previous one; an evaluation takes the best, the last or a named one
(`choose_checkpoint`), and pruning old checkpoints never removes the best."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from harness.data import file_sha256
from harness.errors import HarnessError, warn
from harness.store import fsync_dir


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts/lists of tensors and numbers) into safetensors + a JSON skeleton."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[path] = node.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(node, np.ndarray):
            tensors[path] = torch.from_numpy(node.astype(np.int64) if node.dtype.kind in "iu" else node.copy())
            return {"__ndarray__": path, "dtype": str(node.dtype)}
        if isinstance(node, dict):
            return {"__dict__": [[walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")] for i, (k, v) in enumerate(node.items())]}
        if isinstance(node, (list, tuple)):
            return {"__list__": [walk(v, f"{path}.{i}") for i, v in enumerate(node)], "tuple": isinstance(node, tuple)}
        return node

    return tensors, walk(state, prefix or "s")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__ndarray__" in skeleton:
            return tensors[skeleton["__ndarray__"]].numpy().astype(skeleton["dtype"])
        if "__dict__" in skeleton:
            return {unflatten_state(k, tensors): unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            items = [unflatten_state(v, tensors) for v in skeleton["__list__"]]
            return tuple(items) if skeleton.get("tuple") else items
    return skeleton


def save_state(folder: Path, name: str, state: Any) -> None:
    tensors, skeleton = flatten_state(state)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(skeleton))


def load_state(folder: Path, name: str) -> Any:
    tensors = load_file(str(folder / f"{name}.safetensors"))
    return unflatten_state(json.loads((folder / f"{name}.json").read_text()), tensors)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": list(np.random.get_state()), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1]), *np_state[2:]))
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """Named parameters as CPU tensors for a checkpoint part."""
    return {n: p.detach().cpu().contiguous() for n, p in params.items()}


STATE_FILE = "trainer_state.json"


def temp_folder(root: Path, step: int, create: bool = True) -> Path:
    """Where step's checkpoint is written before its rename: one name every process of a run can find (the
    run folder's lock keeps a second run out). `create`: empty it first (the writing process; under FSDP
    the main one, before the others write their shards into it)."""
    tmp = root / f".step-{step:06d}"
    if create:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    return tmp


def save_checkpoint(root: Path, step: int, parts: dict[str, Any], counters: dict[str, Any], keep: int = 2,
                    written: bool = False) -> Path:
    """Save `parts` and the counters as step's checkpoint. `written`: `temp_folder` already holds files
    (the processes' shards under FSDP); they are checksummed and renamed into place with the rest."""
    final = root / f"step-{step:06d}"
    tmp = temp_folder(root, step, create=not written)
    try:
        for name, state in parts.items():
            save_state(tmp, name, state)
        files = {f.relative_to(tmp).as_posix(): file_sha256(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **counters, "files": files}, indent=2))
        for f in tmp.rglob("*"):  # data on disk before the rename makes the checkpoint visible
            _fsync_file(f) if f.is_file() else fsync_dir(f)
        fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    found = sorted(root.glob("step-*"))
    best = best_rewarded(found)  # never pruned: `--checkpoint-select best` may want it
    for old in found[:-keep]:
        if old != best:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_file(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def clean_temp_folders(run_dir: Path) -> None:
    """Remove the temp folders of saves that were killed before their rename."""
    for tmp in (run_dir / "checkpoints").glob(".step-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def damage(folder: Path, only: tuple[str, ...] | None = None) -> str | None:
    """Why checkpoint `folder` cannot be used (missing, torn or changed files), or None. `only`: check
    just these files (an evaluation reads the weights; a resume reads everything)."""
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"{STATE_FILE} missing or unreadable"
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        return f"{STATE_FILE} holds no step"
    files = state.get("files")
    if isinstance(files, dict):
        for name, digest in files.items():  # a name ending in / in `only` stands for the files under it
            if only is not None and not any(name == o or (o.endswith("/") and name.startswith(o)) for o in only):
                continue
            path = folder / name
            if not path.is_file():
                return f"{name} missing"
            if file_sha256(path) != digest:
                return f"{name} changed since it was saved (sha256 differs)"
        return None
    # Checkpoints written before checksums were stored: every part must at least load.
    for part in folder.glob("*.safetensors"):
        if only is not None and part.name not in only:
            continue
        try:
            load_state(folder, part.stem)
        except Exception as exc:  # noqa: BLE001 (any failure to read means: not resumable)
            return f"{part.name} unreadable ({type(exc).__name__})"
    return None


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("step-*"))


def _newest_intact(run_dir: Path, only: tuple[str, ...] | None) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest intact checkpoint (or None) and the damaged newer ones with why, newest first."""
    damaged = []
    for folder in reversed(checkpoints(run_dir)):
        why = damage(folder, only)
        if why is None:
            return folder, damaged
        damaged.append((folder, why))
    return None, damaged


def latest_checkpoint(run_dir: Path, repair: bool = False, only: tuple[str, ...] | None = None) -> Path | None:
    """The newest intact checkpoint. With `repair`, damaged newer ones are moved aside
    (checkpoints/damaged-step-N), saying so in one line each, so the run continues from the intact one."""
    found, damaged = _newest_intact(run_dir, only)
    for folder, why in damaged if repair else ():
        aside = folder.with_name(f"damaged-{folder.name}")
        shutil.rmtree(aside, ignore_errors=True)
        folder.rename(aside)
        warn(f"{folder}: damaged ({why}); moved to {aside.name}, continuing from the previous checkpoint")
    return found


def require_checkpoint(run_dir: Path, say_fallback: bool = False) -> Path:
    """The newest checkpoint whose weights are intact. With `say_fallback`, each damaged newer checkpoint
    is named in one line: scores of an older checkpoint must not pass for the final ones."""
    if not run_dir.is_dir():
        raise HarnessError(f"{run_dir}: no such run folder")
    found, damaged = _newest_intact(run_dir, WEIGHTS)
    if found is None:
        raise HarnessError(f"{run_dir}: no checkpoint found under checkpoints/{' (all damaged)' if damaged else ''}")
    for folder, why in damaged if say_fallback else ():
        warn(f"{folder}: damaged ({why}); using {found.name} instead")
    return found


# ---- which checkpoint an evaluation uses: best | last | step-N --------------------------------------
# Each checkpoint records `train_reward` in trainer_state.json: the mean over the steps since the previous
# checkpoint (`reward_window`, first and last step) of the logged r1 + r2 (None when no step of the window
# logged both, and for SFT methods). `best` is the checkpoint with the highest one (SCoRe §6), `last` the
# newest intact one, `step-N` that step's checkpoint.

SELECTIONS = "best, last or step-N"
# What an evaluation reads of a checkpoint: one file, or the processes' shards of an FSDP run (weights.dcp/).
WEIGHTS = ("weights.safetensors", "weights.json", "weights.dcp/")


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's trainable weights as whole CPU tensors, whether one process or FSDP's (a sharded
    checkpoint, torch.distributed.checkpoint) wrote them; read in this process alone."""
    sharded = folder / "weights.dcp"
    if not sharded.is_dir():
        return load_state(folder, "weights")
    saved = sharded_metadata(sharded)
    weights = {name: torch.empty(tuple(meta.size), dtype=meta.properties.dtype) for name, meta in saved.items()}
    read_sharded(weights, sharded)
    return weights


def sharded_metadata(folder: Path) -> dict[str, Any]:
    """What a torch.distributed.checkpoint folder holds: each key's size and dtype."""
    import torch.distributed.checkpoint as dcp

    return dcp.FileSystemReader(folder).read_metadata().state_dict_metadata


def read_sharded(state: dict[str, Any], folder: Path) -> None:
    """Fill `state`'s tensors in place from a torch.distributed.checkpoint folder: a DTensor gets its shard,
    a plain tensor the whole. A collective under a process group; in a process alone, a plain read."""
    import warnings

    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    alone = not (dist.is_available() and dist.is_initialized())
    with warnings.catch_warnings():  # DCP warns on every read without a process group: here that is the intent
        warnings.filterwarnings("ignore", message="torch.distributed is .*single process")
        dcp.load(state, checkpoint_id=folder, no_dist=alone)


def weights_digest(folder: Path) -> str:
    """The sha256 that names a checkpoint's weights in a manifest: of weights.safetensors, or of the
    listing (name and sha256) of a sharded checkpoint's weight files."""
    if not (folder / "weights.dcp").is_dir():
        return file_sha256(folder / "weights.safetensors")
    import hashlib

    listing = "".join(f"{f.relative_to(folder).as_posix()} {file_sha256(f)}\n"
                      for f in sorted((folder / "weights.dcp").rglob("*")) if f.is_file())
    return hashlib.sha256(listing.encode()).hexdigest()


def window_reward(records: list[dict[str, Any]]) -> float | None:
    """Mean of r1 + r2 over the log records (steps) that hold both, or None when none does."""
    found = [record["r1"] + record["r2"] for record in records
             if all(isinstance(record.get(k), (int, float)) and not isinstance(record.get(k), bool) for k in ("r1", "r2"))]
    return sum(found) / len(found) if found else None


def train_reward(folder: Path) -> float | None:
    """The training reward a checkpoint recorded (None: none recorded, or its state is unreadable)."""
    try:
        value = json.loads((folder / STATE_FILE).read_text(encoding="utf-8")).get("train_reward")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
        return None
    return float(value)


def _ranked_by_reward(folders: list[Path]) -> list[Path]:
    """The folders that recorded a training reward, highest first; on a tie the later checkpoint first."""
    scored = [(reward, i, folder) for i, folder in enumerate(folders) if (reward := train_reward(folder)) is not None]
    return [folder for _, _, folder in sorted(scored, key=lambda t: (t[0], t[1]), reverse=True)]


def best_rewarded(folders: list[Path]) -> Path | None:
    """Of checkpoint folders in step order, the one with the highest recorded training reward (ties: the later)."""
    ranked = _ranked_by_reward(folders)
    return ranked[0] if ranked else None


def parse_selection(how: str) -> str:
    """`best`, `last` or `step-N` (N a whole number); anything else is a one-line error."""
    text = str(how).strip()
    if text in ("best", "last"):
        return text
    if text.startswith("step-") and text[5:].isdigit() and text[5:].isascii():
        return f"step-{int(text[5:])}"
    raise HarnessError(f"--checkpoint-select must be {SELECTIONS} (got {how!r})")


def _step_of(folder: Path) -> int | None:
    digits = folder.name.removeprefix("step-")
    return int(digits) if digits.isdigit() and digits.isascii() else None


def choose_checkpoint(run_dir: Path, how: str, say_fallback: bool = False) -> tuple[Path, str]:
    """The checkpoint `how` (best | last | step-N) selects, and the rule applied: `best` is `last` when no
    checkpoint recorded a training reward (SFT methods, runs from before rewards were recorded); the caller
    says so where best was asked for. A damaged checkpoint is passed over as `require_checkpoint` does
    (with `say_fallback`, one line each); `step-N` of a damaged or missing checkpoint is a one-line error
    naming the steps there are."""
    how = parse_selection(how)
    run_dir = Path(run_dir)
    if how == "last":
        return require_checkpoint(run_dir, say_fallback), "last"
    if not run_dir.is_dir():
        raise HarnessError(f"{run_dir}: no such run folder")
    found = checkpoints(run_dir)
    if how.startswith("step-"):
        steps = ", ".join(f"step-{s}" for s in (_step_of(f) for f in found) if s is not None) or "none"
        match = [f for f in found if _step_of(f) == int(how[5:])]
        if not match:
            raise HarnessError(f"{run_dir}: no checkpoint {how}; checkpoints there: {steps}")
        why = damage(match[0], WEIGHTS)
        if why is not None:
            raise HarnessError(f"{match[0]}: damaged ({why}); checkpoints there: {steps}")
        return match[0], how
    damaged = []
    for folder in _ranked_by_reward(found):
        why = damage(folder, WEIGHTS)
        if why is None:
            for bad, reason in damaged if say_fallback else ():
                warn(f"{bad}: damaged ({reason}); using {folder.name} instead (the next highest training reward)")
            return folder, "best"
        damaged.append((folder, why))
    return require_checkpoint(run_dir, say_fallback), "last"  # no intact checkpoint recorded a reward


def select_checkpoint(run_dir: Path, how: str = "last", say_fallback: bool = False) -> Path:
    """The checkpoint folder `how` (best | last | step-N) selects; see `choose_checkpoint`."""
    return choose_checkpoint(run_dir, how, say_fallback)[0]


def check_run_folder(run_dir: Path) -> None:
    """A one-line error when `run_dir` is no folder or holds no checkpoint (nothing is read or hashed)."""
    if not Path(run_dir).is_dir():
        raise HarnessError(f"{run_dir}: no such run folder")
    if not checkpoints(Path(run_dir)):
        raise HarnessError(f"{run_dir}: no checkpoint found under checkpoints/")


def selection_label(how: str, folder_name: str) -> str:
    """How a table names a selected checkpoint: `best: step-12`, `last: step-40`, or `step-8` when named."""
    step = _step_of(Path(folder_name))
    name = f"step-{step}" if step is not None else folder_name
    return name if how == name else f"{how}: {name}"
