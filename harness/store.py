"""Writing results safely: whole files are replaced atomically (write a temp file, fsync, rename),
and a run's samples are appended whole lines at a time."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from harness.errors import HarnessError


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


class RunStore:
    """`results/runs/<run-id>/`: config.yaml, manifest.json, samples.jsonl, metrics.json.

    Samples are appended whole lines at a time (one write per batch, then fsync), so a killed run
    leaves at most one torn last line, which the next open cuts off; resuming skips every id already
    stored, so no problem is generated or stored twice.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.samples_path = self.root / "samples.jsonl"

    def write_config(self, config: dict[str, Any], identity: dict[str, Any]) -> None:
        import yaml

        path = self.root / "config.yaml"
        if path.is_file():
            stored = yaml.safe_load(path.read_text()) or {}
            changed = sorted(k for k, v in identity.items() if stored.get(k) != v)
            if changed:
                raise HarnessError(f"{self.root} holds a run with other settings ({', '.join(changed)}); "
                                   "choose another --out or delete it")
        atomic_write_text(path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        path = self.root / "manifest.json"
        if path.is_file():  # keep the first start's record; note each resume
            first = json.loads(path.read_text())
            first.setdefault("resumed", []).append({k: manifest[k] for k in ("started", "git", "command") if k in manifest})
            manifest = first
        atomic_write_json(path, manifest)

    def load_samples(self) -> dict[str, dict[str, Any]]:
        if not self.samples_path.is_file():
            return {}
        self._cut_torn_tail()
        samples: dict[str, dict[str, Any]] = {}
        with self.samples_path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise HarnessError(f"{self.samples_path}:{lineno}: corrupt sample ({exc.msg})") from None
                samples.setdefault(record["id"], record)
        return samples

    def _cut_torn_tail(self) -> None:
        with self.samples_path.open("rb+") as fh:
            data = fh.read()
            if data and not data.endswith(b"\n"):
                fh.truncate(data.rfind(b"\n") + 1)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
        if not payload:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.samples_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(payload)
            while view:  # a short write is finished, never left torn by us
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.root / "metrics.json", metrics)
