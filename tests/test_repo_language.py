"""The repository speaks of the product and of what was measured (date, machine, command), not of
how it was developed: no numbered work sessions, no lent or borrowed machines, no tool of the
development environment, no local folders outside the repository. Raw logs under
docs/results/data/ are records of what ran and stay as they were; their folder names follow
tier-date-purpose. pytest's own session (scope="session", pytest_sessionfinish, ...) is not a
marker: only the explicit phrases below are."""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = "docs/results/data/"

MARKERS = {
    "a numbered work session": re.compile(
        r"\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|\d+(st|nd|rd|th))"
        r" session\b|\bsessions? \d+\b|\bdevice sessions?\b", re.IGNORECASE),
    "a lent or borrowed machine": re.compile(r"\blent\b|\bborrowed\b", re.IGNORECASE),
    "the development environment's device tool": re.compile(r"\bdevice tool\b", re.IGNORECASE),
    "the device tool's output folder $OUT": re.compile(r"\$OUT(?![A-Za-z0-9_])|\$\{OUT[:}]"),
    "a folder outside the repository": re.compile(r"shared/reference|\.\./shared\b|/work/\.device"),
    "a results folder named by session": re.compile(r"\bh[0-9]+-s[0-9]+-"),
    "the development environment's runner scripts": re.compile(r"\bdevice[_ ]sessions?\b|\bdevice_run\.sh\b",
                                                             re.IGNORECASE),
    "a limit of the development environment": re.compile(
        r"\bclean copy of this work\b|\bfresh machine per command\b|\b10-minute commands?\b", re.IGNORECASE),
}
BINARY = (".png", ".jpg", ".jpeg", ".gz", ".whl", ".pt", ".safetensors")


def tracked_files() -> list[str]:
    r = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"not a git checkout, no list of tracked files: {r.stderr.strip()}")
    return r.stdout.splitlines()


def marker_hits(text: str) -> list[tuple[int, str, str]]:
    return [(n, what, line.strip()) for n, line in enumerate(text.splitlines(), 1)
            for what, pattern in MARKERS.items() if pattern.search(line)]


def test_markers_catch_the_phrases_and_spare_pytest_sessions():
    caught = ["## Eleventh session (2026-11-26)", "as in session 7", "one H100 lent by the device tool",
              "a borrowed machine", "packs into $OUT/results.tar.gz", "${OUT:-/tmp/out}",
              "see shared/reference/flux-fast-readme.md", "docs/results/data/h100-s3-smoke",
              "the wheels of ../shared/device", "across four device sessions",
              "PARTS=smoke:290 bash tools/device_session.sh", "a device_session part", "by tools/device_run.sh",
              "written to /work/.device/out", "docs/results/data/h100-s4-{std,table}", "h200-s12-2gpu",
              "Smoke from a clean copy of this work", "usually a fresh machine per command",
              "one 10-minute command per rung"]
    spared = ["def pytest_sessionfinish(session, exitstatus):", '@pytest.fixture(scope="session")',
              "the cases after it run in a new pytest session", "OUT_DIR=/tmp/out bash tools/batch.sh",
              "docs/results/data/h100-2026-11-23-smoke-1542", "runs in separate processes",
              "a silent fall-back", "the talent", "docs/results/data/h100-2026-11-26-{std-k3,recheck}",
              "each part under a 10-minute limit", "on a machine with empty caches", "diffperf/session.py",
              "the device time of a step", "h100-sxm-80gb"]
    assert [line for line in caught if not marker_hits(line)] == []
    assert [hit for line in spared for hit in marker_hits(line)] == []


def test_no_development_language_in_tracked_text():
    hits = []
    for path in tracked_files():
        if path.startswith(DATA) or path.endswith(BINARY) or path == "tests/test_repo_language.py":
            continue
        file = ROOT / path
        if not file.exists():  # deleted in the working tree, not yet committed
            continue
        data = file.read_bytes()
        if b"\0" in data:  # a binary file without a known extension
            continue
        text = data.decode("utf-8", errors="replace")
        hits += [f"{path}:{n}: {what}: {line[:120]}" for n, what, line in marker_hits(text)]
    assert hits == [], "development language (say what the product does or what was measured):\n" + "\n".join(hits)


def test_results_folders_are_named_by_tier_date_and_purpose():
    folders = sorted({p.split("/")[3] for p in tracked_files() if p.startswith(DATA) and p.count("/") > 3})
    assert folders, f"no results folders under {DATA}"
    # `cpu` is the cpu tier's committed run that docs/results/cpu.md and the cpu baselines cite
    odd = [f for f in folders if f != "cpu" and not re.fullmatch(r"[a-z0-9]+-\d{4}-\d{2}-\d{2}-[a-z0-9][a-z0-9-]*", f)]
    assert odd == [], f"results folders not named tier-YYYY-MM-DD-purpose: {odd}"
