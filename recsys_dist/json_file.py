"""Reading a JSON file the project wrote (metadata, plan, architecture), with errors that name the file; writing one
(or any final file a resume reads) atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Type


def read_json(path: str | Path, error: Type[Exception], missing: str,
              missing_error: Optional[Type[Exception]] = None) -> Any:
    """The parsed document. A missing file raises `missing_error or error` with the message `missing`; text that
    is not JSON raises `error` naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise (missing_error or error)(missing)
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{p}:{e.lineno}: not valid JSON: {e.msg}") from None


def write_atomic(path: str | Path, text: str) -> None:
    """`text` to `path` through a temporary file in the same folder, flushed to disk, then os.replace: a reader (or
    a resume after a kill mid-write) sees the old file or the whole new one, never a cut one."""
    p = Path(path)
    part = p.with_name(f".{p.name}.part")
    with part.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, p)


def write_json(path: str | Path, doc: Any, indent: int = 2) -> None:
    write_atomic(path, json.dumps(doc, indent=indent))
