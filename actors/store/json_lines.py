"""Reading a journal of JSON lines that a crash may have left with a torn last line."""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Any

logger = logging.getLogger(__name__)


def read_json_lines(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every line of ``path`` as an object, in order (none if missing; a torn line is skipped)."""
    try:
        text = pathlib.Path(path).read_text()
    except FileNotFoundError:
        return []
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning('%s: skipping a torn line', path)
    return lines
