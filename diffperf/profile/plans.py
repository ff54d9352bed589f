"""A model's FLOP plan for one setup: what one generation runs, per component (the plan of each
model family is in its folder, diffperf/models/<family>/plan.py; the types and helpers in
diffperf/models/plan.py), and the suite's default prompt."""
from __future__ import annotations

from pathlib import Path

from ..models import ModelSpec
from ..models.plan import ROLES, Context, Invocation, Plan, Setup
from ..prompts import Prompts

__all__ = ["ROLES", "Invocation", "Plan", "Setup", "default_prompt", "make_plan"]

PROMPTS_FILE = Path(__file__).resolve().parents[2] / "fixtures" / "prompts.json"


def default_prompt() -> str:
    """The suite's short prompt (what the measured cases generate); a missing or broken prompts
    file is an error naming it, not a count made for another prompt."""
    return Prompts.load(PROMPTS_FILE).texts["short"]


def make_plan(spec: ModelSpec, size: str, pipe, setup: Setup) -> Plan:
    """The calls of one generation of `spec` at `size` under `setup` (ModelSpec.plan)."""
    return spec.plan(Context(spec, size, pipe, setup))
