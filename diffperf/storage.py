"""Versioned JSON files: every stored file carries kind + schema_version, and a file this code
does not understand is refused loudly, naming the file. Each kind has its own version
(KIND_VERSIONS); an older file of a kind is read through its MIGRATIONS, and a newer one is refused.
A file whose name ends in .gz is read through gzip (kept records of runs are stored compressed:
`gzip -9n results.json`)."""
from __future__ import annotations

import gzip
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import StoredFileError

SCHEMA_VERSION = 1
# kinds whose format moved past version 1: the version written now (a lower layer cannot import the
# kinds' owners: the names are spelled here)
KIND_VERSIONS = {
    # 2: a reference may record `image_downscales`, how its stored images were made from the generated
    # image (references.image_downscales); version 1 files have none (their images are direct views)
    "diffperf-latents": 2,
}
# how a file of an older version is read as the current one: (kind, version) -> the body, one version on
MIGRATIONS = {
    ("diffperf-latents", 1): lambda body: body,  # nothing to add: no image_downscales means a direct view
}


# what to do about a file of a kind that does not read (a lower layer cannot import the kinds' owners:
# the names are spelled here)
REMEDY = {
    "diffperf-baselines": "restore it from git or regenerate it with tools/update_baselines.py",
    "diffperf-latents": "restore it from git or regenerate it with tools/update_baselines.py --references",
    "diffperf-results": "a results file is written by pytest perf_tests: measure again or restore the run",
    "diffperf-run-header": "a results folder's run.json is written by pytest perf_tests: measure again",
    "diffperf-case-result": "a case file is written by pytest perf_tests: measure the case again",
    "diffperf-targets": "restore it from git (fixtures/targets/<tier>.json is written by hand)",
}
REMEDY_ANY = "restore it or make it again with the tool that wrote it"


def load(path: Path, kind: str) -> dict[str, Any]:
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt") as f:
                text = f.read()
        else:
            text = path.read_text()
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # gzip's BadGzipFile is an OSError
        raise StoredFileError(f"cannot read {kind} file {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoredFileError(f"{kind} file {path} is not valid JSON ({exc}); {REMEDY.get(kind, REMEDY_ANY)}") from exc
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise StoredFileError(f"{path} is not a {kind} file (kind={data.get('kind') if isinstance(data, dict) else None!r})")
    version = data.get("schema_version")
    current = current_version(kind)
    readable = [v for v in range(1, current + 1) if all((kind, u) in MIGRATIONS for u in range(v, current))]
    if type(version) is not int or version not in readable:  # true and 1.0 equal 1 in Python, not in the format
        raise StoredFileError(f"{kind} file {path} has schema_version {version!r}; this code reads "
                              f"schema_version {' and '.join(map(str, readable))} only")
    while version < current:
        data = {**MIGRATIONS[(kind, version)](data), "schema_version": version + 1}
        version += 1
    return data


def current_version(kind: str) -> int:
    """The schema_version files of `kind` are written with."""
    return KIND_VERSIONS.get(kind, SCHEMA_VERSION)


def without_non_finite(obj: Any, where: str = "") -> tuple[Any, list[str]]:
    """A copy of a JSON-like tree with every NaN / infinite float replaced by None, and the paths
    where that happened (e.g. "cases.x.latent_projections.short[0]")."""
    found: list[str] = []

    def walk(o: Any, at: str) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            found.append(at)
            return None
        if isinstance(o, dict):
            return {k: walk(v, f"{at}.{k}" if at else str(k)) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v, f"{at}[{i}]") for i, v in enumerate(o)]
        return o

    return walk(obj, where), found


def _check_finite(obj: Any) -> None:
    found = without_non_finite(obj)[1]
    if found:
        raise ValueError(f"refusing to store non-finite number at {found[0] or 'top level'}")


def dump(path: Path, kind: str, data: dict[str, Any]) -> None:
    """Atomic write: a temp file in the same directory, then rename; the old file stays intact
    until the new one is complete."""
    path = Path(path)
    body = {"kind": kind, "schema_version": current_version(kind), **data}
    _check_finite(body)
    text = json.dumps(body, indent=1, sort_keys=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
