"""The prompts and seed a run generates with (PerfOptions.prompts_file: fixtures/prompts.json)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import storage


@dataclass(frozen=True)
class Prompts:
    seed: int
    texts: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> "Prompts":
        data = storage.load(path, "diffperf-prompts")
        return cls(int(data["seed"]), dict(data["prompts"]))

    @property
    def timing_prompt(self) -> str:
        return next(iter(self.texts.values()))
