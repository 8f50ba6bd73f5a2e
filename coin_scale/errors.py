"""Errors that the CLI turns into one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the person running coin-scale: says what was expected, what was got, the fix."""

    exit_code = 2


class ResourceError(UserError):
    """Something outside coin-scale is missing or unusable (a weights file, a writable directory)."""

    exit_code = 3


def close_matches(name: str, choices: list[str], n: int = 5) -> str:
    """A ', '-joined list of the choices closest to `name`, for 'did you mean' messages."""
    import difflib

    hits = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not hits:
        hits = [c for c in choices if name.lower() in c.lower()][:n]
    return ", ".join(hits)
