"""Errors that name the bad input and the valid choices."""
from __future__ import annotations

from typing import Iterable


class UsageError(ValueError):
    """Bad user input: unknown name, bad option value."""


class StoredFileError(RuntimeError):
    """A stored file (baseline, results, reference) is missing, corrupted or of an unknown schema."""


def unknown(kind: str, name: str, valid: Iterable[str]) -> UsageError:
    return UsageError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(valid))}")
