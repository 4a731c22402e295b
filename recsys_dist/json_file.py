"""Reading a JSON file the project wrote (metadata, plan, architecture), with errors that name the file."""

from __future__ import annotations

import json
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
