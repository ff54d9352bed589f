"""Where the repository is: the default results, baselines, references and prompts live under it."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# measured runs kept with the repository (results folders the documents are generated from)
RESULTS_DATA = ROOT / "docs" / "results" / "data"
