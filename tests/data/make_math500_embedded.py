"""Write tests/data/math500_embedded_responses.jsonl from an eval run of the embedded model on MATH500.

    harness eval --task math500 --model embedded --limit 50 --turns 2 --out /tmp/math500-embedded
    python tests/data/make_math500_embedded.py /tmp/math500-embedded

One line per generated attempt (carried copies left out) with what the agreement test reads: id,
gold, response, attempt, model (spec, id, weights sha256, dtype, device) and settings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from harness.store import atomic_write_jsonl

SETTINGS = ("task", "split", "method", "limit", "turns", "seed", "max_new_tokens", "temperature", "top_p", "dtype",
            "batch_size")


def main(run_dir: Path) -> None:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    settings = {key: config.get(key) for key in SETTINGS} | {"git": manifest.get("git", {}).get("commit")}
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines() if line.strip()]
    lines = [{"id": sample["id"], "gold": sample["answer"], "response": step["text"], "attempt": k,
              "model": manifest["model"], "settings": settings}
             for sample in samples
             for k, step in enumerate((s for s in sample["steps"] if s["kind"] == "attempt"), start=1)
             if not step.get("carried")]
    atomic_write_jsonl(Path(__file__).parent / "math500_embedded_responses.jsonl", lines)
    print(f"{len(lines)} responses of {len(samples)} problems")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
