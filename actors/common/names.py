"""Names every process agrees on without asking: a Director's name."""

from __future__ import annotations


def director_name(index: int) -> str:
    """The name of the Director of partition ``index`` (its agent, journal and files)."""
    return f'director-{index}'
