"""Record N (the model's parameter count) in the manifest.json of eval runs written before evaluations
recorded it, so their FLOPs columns do not depend on which model configs a machine has cached.

    .venv/bin/python scripts/record_parameters.py results/reference/runs/*

N comes from the model's config.json in the local cache, built on the meta device (no weights loaded);
a run whose model config is not here is left as it is, saying so. Nothing else in the manifest changes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.model_size import parameter_count
from harness.store import atomic_write_json


def main(folders: list[str]) -> int:
    missing = 0
    for folder in map(Path, folders):
        path = folder / "manifest.json"
        if not path.is_file():
            continue
        manifest = json.loads(path.read_text())
        model = manifest.get("model") or {}
        if isinstance(model.get("parameters"), int):
            continue
        count = parameter_count(model)
        if count is None:
            print(f"{folder}: no local config.json for model {model.get('spec')!r}; left as it is", file=sys.stderr)
            missing += 1
            continue
        model["parameters"] = count
        atomic_write_json(path, manifest)
        print(f"{folder}: parameters = {count}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
