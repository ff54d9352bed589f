"""What the command modules share: a parser for one command run alone."""
from __future__ import annotations

import argparse
from typing import Callable

Adder = Callable[[argparse.ArgumentParser], None]
Runner = Callable[[argparse.Namespace, argparse.ArgumentParser], int]


def parser_for(doc: str | None, add_arguments: Adder,
               parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """`parser` (a new one when None) with the command's description (its module docstring) and
    arguments."""
    p = parser or argparse.ArgumentParser()
    p.description = doc
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_arguments(p)
    return p


def run_alone(doc: str | None, add_arguments: Adder, run: Runner, argv: list[str] | None = None) -> int:
    """One command as its own program (tools/<name>.py): parse `argv` (default sys.argv) and run."""
    p = parser_for(doc, add_arguments)
    return run(p.parse_args(argv), p)
