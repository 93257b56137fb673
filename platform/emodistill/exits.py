"""The one name of an exit: ``exit_<block>``, blocks counted from 1.

Used in weights (head keys), metrics (``val/exit_3/uar``), deployments, configs and HTTP
answers. Every module parses and sorts exit names through these functions (no torch here,
so the router and config validation import it cheaply).
"""

from __future__ import annotations

from collections.abc import Iterable

PREFIX = "exit_"


def exit_name(block: int) -> str:
    """``3 -> "exit_3"``."""
    if int(block) < 1:
        raise ValueError(f"blocks are counted from 1, got {block}")
    return f"{PREFIX}{int(block)}"


def is_exit_name(name: object) -> bool:
    """True for ``exit_<positive int>`` (no sign, no spaces, no leading zeros)."""
    if not isinstance(name, str) or not name.startswith(PREFIX):
        return False
    digits = name[len(PREFIX):]
    return digits.isdigit() and digits.isascii() and not digits.startswith("0")


def exit_block(name: str) -> int:
    """``"exit_3" -> 3``; a ValueError naming the expected form for anything else."""
    if not is_exit_name(name):
        raise ValueError(f"{name!r} is not an exit name (exit_<block>, e.g. exit_3)")
    return int(name[len(PREFIX):])


def sort_exits(names: Iterable[str]) -> list[str]:
    """Exit names shallow first, duplicates removed."""
    return sorted(set(names), key=exit_block)


def deepest(names: Iterable[str]) -> str:
    """The deepest of ``names``."""
    ordered = sort_exits(names)
    if not ordered:
        raise ValueError("no exits given")
    return ordered[-1]


__all__ = ["PREFIX", "deepest", "exit_block", "exit_name", "is_exit_name", "sort_exits"]
