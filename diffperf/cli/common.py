"""What the command modules share: a parser for one command run alone, and a case built eager."""
from __future__ import annotations

import argparse
from typing import Callable

from ..errors import StoredFileError, UsageError

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


def run_reporting_errors(run: Runner, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run a command; bad input (an unknown tier, model or recipe: UsageError) and an unreadable or
    foreign stored file (StoredFileError) end it as a usage error, the message naming the thing and
    the valid choices, instead of a traceback."""
    try:
        return run(args, parser)
    except (UsageError, StoredFileError) as exc:
        parser.error(str(exc))  # prints "<prog>: error: ..." and exits 2
        raise  # parser.error does not return


def run_alone(doc: str | None, add_arguments: Adder, run: Runner, argv: list[str] | None = None) -> int:
    """One command as its own program (tools/<name>.py): parse `argv` (default sys.argv) and run."""
    p = parser_for(doc, add_arguments)
    return run_reporting_errors(run, p.parse_args(argv), p)


def build_eager_case(args: argparse.Namespace, ap: argparse.ArgumentParser, why: str):
    """(the case of --tier / --model / --recipe built as the suite builds it, the suite's prompts);
    a recipe with compile is refused as a usage error (`why`: what needs the eager code)."""
    # start-up cost: building a case loads torch and diffusers; only the commands that build one call this
    from diffperf.build import build_case
    from diffperf.cases import Case
    from diffperf.options import PerfOptions
    from diffperf.prompts import Prompts
    from diffperf.recipes import parse_recipe
    from diffperf.tiers import get_tier

    recipe = parse_recipe(args.recipe)
    if recipe.compile:
        ap.error(f"{args.recipe}: give the recipe without compile ({why})")
    options = PerfOptions()
    built = build_case(Case(args.model, recipe, "standard"), get_tier(args.tier), options)
    return built, Prompts.load(options.prompts_file)
