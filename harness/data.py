"""Reading task data: local JSONL under HARNESS_DATA_DIR (or --data-dir), else the Hugging Face hub.

Offline use must never hang: with a data dir we read files only; without one we probe the hub with
a short deadline first and fail with a one-line message naming the variable.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from harness.errors import HarnessError
from harness.store import BadLine, parse_line

DATA_ENV = "HARNESS_DATA_DIR"
HUB_HOST = "huggingface.co"


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    value = explicit if explicit else os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else None


def read_jsonl(path: Path, required: Iterable[str] = ()) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) for every non-blank line; a bad line raises `file:line: reason`."""
    if not path.is_file():
        raise HarnessError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'file not found'}")
    rows = []
    required = tuple(required)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read ({exc.strerror})") from None
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            record = parse_line(raw, first=lineno == 1)
        except BadLine as exc:
            raise HarnessError(f"{path}:{lineno}: {exc}") from None
        if record is None:
            continue
        if b"\\u" in raw and _has_lone_surrogate(record):
            raise HarnessError(f"{path}:{lineno}: invalid text (a lone UTF-16 surrogate \\u escape)")
        missing = [k for k in required if k not in record]
        if missing:
            raise HarnessError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
        rows.append((lineno, record))
    return rows


def _has_lone_surrogate(record: Any) -> bool:
    """JSON can escape half of a UTF-16 pair ("\\ud800"); such text cannot be written back as UTF-8."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_reachable(timeout: float = 3.0) -> bool:
    """A TCP connect to the hub within `timeout` s; DNS can block, so it runs in a daemon thread."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def load_records(
    relpath: str,
    hub_loader: Callable[[], list[dict[str, Any]]],
    data_dir: str | os.PathLike | None = None,
    required: Iterable[str] = (),
) -> list[tuple[str, dict[str, Any]]]:
    """(where, record) pairs from `<data dir>/<relpath>` when a data dir is set, else from the hub."""
    root = resolve_data_dir(data_dir)
    if root is not None:
        path = root / relpath
        if not path.is_file():
            raise HarnessError(f"{path}: not found ({DATA_ENV} / --data-dir is {root})")
        rows = read_jsonl(path, required)
        if not rows:
            raise HarnessError(f"{path}: holds no records")
        return [(f"{path}:{lineno}", rec) for lineno, rec in rows]
    if not hub_reachable():
        raise HarnessError(
            f"no local data for {relpath} and the Hugging Face hub is unreachable; "
            f"set {DATA_ENV} (or --data-dir) to a folder holding {relpath}"
        )
    records = hub_loader()
    if not records:
        raise HarnessError(f"hub:{relpath}: holds no records")
    required = tuple(required)
    for i, rec in enumerate(records):
        missing = [k for k in required if k not in rec]
        if missing:
            raise HarnessError(f"hub:{relpath}:{i + 1}: missing field(s) {', '.join(missing)}")
    return [(f"hub:{relpath}:{i + 1}", rec) for i, rec in enumerate(records)]


def hub_rows(path: str, name: str | None, split: str) -> list[dict[str, Any]]:
    import datasets

    return [dict(row) for row in datasets.load_dataset(path, name, split=split)]


def local_data_files(data_dir: str | os.PathLike | None, relpaths: Iterable[str]) -> dict[str, str]:
    """sha256 of the local files a run read, for manifests (empty when data came from the hub)."""
    root = resolve_data_dir(data_dir)
    if root is None:
        return {}
    return {rel: file_sha256(root / rel) for rel in relpaths if (root / rel).is_file()}
