"""The batch files of tools/batches/ and tools/batch.sh, which runs them on GPU machines CI never
sees: every part's command parses, part names are unique, limits are whole seconds, each file says
what it runs; batch.sh picks parts, takes PART:SECONDS and refuses a part its file does not have."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BATCHES = sorted((ROOT / "tools" / "batches").glob("*.txt"))


def parts(path: Path) -> list[tuple[str, str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, seconds, cmd = line.split(maxsplit=2)
            rows.append((name.rstrip("!"), seconds, cmd))
    return rows


@pytest.mark.parametrize("batch", BATCHES, ids=lambda p: p.name)
def test_batch_file_parts_parse(batch):
    lines = batch.read_text().splitlines()
    assert lines[0].startswith("# "), f"{batch.name} starts without a header comment saying what it runs"
    rows = parts(batch)
    names = [name for name, _, _ in rows]
    assert rows and len(names) == len(set(names)), f"duplicate part names in {batch.name}: {names}"
    for name, seconds, cmd in rows:
        assert seconds.isdigit() and int(seconds) > 0, f"{batch.name} part {name}: limit {seconds!r}"
        r = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert r.returncode == 0, f"{batch.name} part {name}: {r.stderr}"


def run_batch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT_DIR": str(tmp_path / "out"), "WORK": str(tmp_path / "work")}
    return subprocess.run(["bash", str(ROOT / "tools" / "batch.sh"), str(tmp_path / "b.txt"), *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_batch_sh_picks_parts_sets_limits_and_packs_results(tmp_path):
    (tmp_path / "b.txt").write_text(
        "# a test batch\n"
        "one 5 mkdir -p $RESULTS && echo measured > $RESULTS/r.txt\n"
        "two 1 sleep 3; echo two finished\n"
        "three 5 echo three ran\n")
    r = run_batch(tmp_path, "two:6", "one")
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "out"
    assert "two finished" in (out / "two.log").read_text()  # its limit raised from 1 to 6 s
    assert not (out / "three.log").exists()  # not picked
    listing = subprocess.run(["tar", "-tzf", str(out / "results.tar.gz")], capture_output=True, text=True).stdout
    assert "results-one/r.txt" in listing
    # a later run with the same WORK packs its own parts only, never an earlier run's results
    r = run_batch(tmp_path, "three")
    assert r.returncode == 0 and "no part wrote results" in r.stdout, r.stdout + r.stderr
    assert not (out / "results.tar.gz").exists()  # not the first run's archive left as if it were this one's
    (tmp_path / "work" / "results-earlier").mkdir()
    r = run_batch(tmp_path, "one")
    listing = subprocess.run(["tar", "-tzf", str(out / "results.tar.gz")], capture_output=True, text=True).stdout
    assert "results-one/r.txt" in listing and "results-earlier" not in listing


def test_batch_sh_stops_a_part_at_its_limit(tmp_path):
    (tmp_path / "b.txt").write_text("# a test batch\nslow 1 sleep 5 && touch $WORK/finished-late\nok 5 mkdir -p $RESULTS\n")
    r = run_batch(tmp_path)
    assert r.returncode == 124, r.stdout + r.stderr  # timeout's status, kept as the batch's
    assert not (tmp_path / "work" / "finished-late").exists()
    assert (tmp_path / "out" / "ok.log").exists()  # a part that ran out of time does not stop the others


@pytest.mark.parametrize("arg, message", [("four", "unknown part 'four'"), ("one:ten", "whole seconds")])
def test_batch_sh_refuses_bad_part_arguments(tmp_path, arg, message):
    (tmp_path / "b.txt").write_text("# a test batch\none 5 true\n")
    r = run_batch(tmp_path, arg)
    assert r.returncode == 2 and message in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_batch_sh_carries_the_inductor_cache_between_machines(tmp_path):
    """INDUCTOR_CACHE_OUT=1 packs the compile cache into pieces; INDUCTOR_CACHE_IN unpacks them on the
    next machine before its first part."""
    (tmp_path / "b.txt").write_text("# a test batch\n"
                                    "compile 5 mkdir -p $TORCHINDUCTOR_CACHE_DIR/fxgraph && echo kernel > $TORCHINDUCTOR_CACHE_DIR/fxgraph/k\n"
                                    "warm 5 cat $TORCHINDUCTOR_CACHE_DIR/fxgraph/k\n")
    first = subprocess.run(["bash", str(ROOT / "tools" / "batch.sh"), str(tmp_path / "b.txt"), "compile"],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "OUT_DIR": str(tmp_path / "out1"), "WORK": str(tmp_path / "w1"),
                                "INDUCTOR_CACHE_OUT": "1", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "c1")})
    assert first.returncode == 0 and "inductor cache packed" in first.stdout, first.stdout + first.stderr
    pieces = sorted((tmp_path / "out1").glob("inductor-cache.tar.gz.part-*"))
    assert [p.name for p in pieces] == ["inductor-cache.tar.gz.part-00"]
    second = subprocess.run(["bash", str(ROOT / "tools" / "batch.sh"), str(tmp_path / "b.txt"), "warm"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "OUT_DIR": str(tmp_path / "out2"), "WORK": str(tmp_path / "w2"),
                                 "INDUCTOR_CACHE_IN": str(tmp_path / "out1" / "inductor-cache.tar.gz.part-*"),
                                 "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "c2")})
    assert second.returncode == 0 and "inductor cache seeded" in second.stdout, second.stdout + second.stderr
    assert "kernel" in (tmp_path / "out2" / "warm.log").read_text()
    missing = subprocess.run(["bash", str(ROOT / "tools" / "batch.sh"), str(tmp_path / "b.txt"), "warm"],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "OUT_DIR": str(tmp_path / "out3"), "WORK": str(tmp_path / "w3"),
                                  "INDUCTOR_CACHE_IN": str(tmp_path / "nowhere.tar.gz"),
                                  "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "c3")})
    assert missing.returncode == 2 and "no such file" in missing.stderr
