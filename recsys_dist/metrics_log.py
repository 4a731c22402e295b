"""metrics.jsonl on resume: the records a dead run wrote past the checkpoint it resumes from are dropped, since the
resumed run writes them again (each step once in the file, as TensorBoard's purge_step does for its events)."""

from __future__ import annotations

import json
import os
from pathlib import Path

REDONE = ("train", "val", "checkpoint")  # the per-step events; start / resume / end are kept as the run's history


def drop_records_after(path: Path, step: int) -> int:
    """Rewrites `path` (atomically) without the train / val / checkpoint records of steps after `step`, and
    without a torn last line (the dead run's unfinished write); returns how many records were dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(record, dict) and record.get("event") in REDONE and int(record.get("step", -1)) > step:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        part = path.with_name(path.name + ".part")
        part.write_text("".join(line + "\n" for line in kept))
        os.replace(part, path)
    return dropped
