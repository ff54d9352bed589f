"""A stored reference image is compared with a run's image brought to the same view, by the same
chain of downscales (references.image_downscales), and the latents file's version says so."""
import json

import numpy as np
import pytest

from diffperf import accuracy, storage
from diffperf.errors import StoredFileError
from diffperf.image_verdicts import judge_regression
from diffperf.recipes import parse_recipe
from diffperf.references import IMAGE_DOWNSCALES, LATENTS_FILE, LATENTS_KIND, compact_references

PROJ = {"short": [1.0, 2.0, 3.0]}
RESULT = {"cpu_class": "x", "latent_projections": PROJ}


def cell_noise(side=1024, cell=8, seed=0):
    """What a seeded-weight 1024-px image looks like: noise in cells of the VAE's 8 px."""
    cells = np.random.default_rng(seed).random((side // cell, side // cell, 3)).astype(np.float32)
    return np.repeat(np.repeat(cells, cell, 0), cell, 1)


def store_v1_reference(folder, img, side):
    """A reference as the suite stored it before image_downscales: one view, latents file version 1."""
    accuracy.save_png(accuracy.reference_view(img, side), folder / "short.png")
    (folder / LATENTS_FILE).write_text(json.dumps({"kind": LATENTS_KIND, "schema_version": 1, "case": "m/bf16",
                                                   "cpu_class": "x", "projections": PROJ}))


def regression(img, folder):
    return judge_regression("m/bf16", {"short": img}, RESULT, folder, "h100", "cuda", parse_recipe("bf16"))


def test_a_chain_of_downscales_is_not_one_downscale_for_noise_like_images():
    full = cell_noise()
    s = accuracy.compare(accuracy.stored_view(full), accuracy.stored_view(full, (256, 128)))
    # the same image, two views: enough apart to fail the GPU regression check (PSNR 35 dB)
    assert s["ssim"] < 0.99 and s["psnr"] < 35.0
    assert accuracy.stored_view(full, (128,)).shape == accuracy.stored_view(full).shape == (128, 128, 3)


def test_a_compacted_reference_records_its_chain_and_judges_an_equal_image_equal(tmp_path):
    full = cell_noise()
    folder = tmp_path / "h100" / "m" / "bf16"
    folder.mkdir(parents=True)
    store_v1_reference(folder, full, 256)
    done = compact_references(tmp_path / "h100", 128)
    assert done == [folder / "short.png"] and accuracy.load_png(folder / "short.png").shape == (128, 128, 3)
    stored = json.loads((folder / LATENTS_FILE).read_text())
    assert stored[IMAGE_DOWNSCALES] == [256, 128] and stored["schema_version"] == 2
    assert stored["projections"] == PROJ and stored["case"] == "m/bf16"  # the rest kept
    v = regression(full, folder)
    assert v.status == "passed" and v.record["short"]["ssim"] == 1.0 and v.record["short"]["psnr"] == 99.0
    # without the record the same image fails against the same file: the false alarm it prevents
    (folder / LATENTS_FILE).write_text(json.dumps({**stored, IMAGE_DOWNSCALES: None}))
    assert regression(full, folder).failed
    # a real change still fails through the chain
    (folder / LATENTS_FILE).write_text(json.dumps(stored))
    assert regression(cell_noise(seed=1), folder).failed


def test_a_reference_stored_as_one_view_keeps_being_compared_as_one(tmp_path):
    full = cell_noise()
    store_v1_reference(tmp_path, full, 128)
    assert compact_references(tmp_path, 128) == []  # nothing larger: nothing rewritten, nothing recorded
    assert IMAGE_DOWNSCALES not in storage.load(tmp_path / LATENTS_FILE, LATENTS_KIND)
    assert regression(full, tmp_path).record["short"]["ssim"] == 1.0


def test_compaction_refuses_a_folder_it_cannot_record_and_writes_nothing(tmp_path):
    full = cell_noise(side=512)
    good, bare = tmp_path / "m" / "bf16", tmp_path / "m" / "fp16"
    for folder in (good, bare):
        folder.mkdir(parents=True)
        store_v1_reference(folder, full, 256)
    (bare / LATENTS_FILE).unlink()
    before = (good / "short.png").read_bytes()
    with pytest.raises(StoredFileError, match=f"{bare} holds images larger than 128 px but no latents.json"):
        compact_references(tmp_path, 128)
    assert (good / "short.png").read_bytes() == before
    assert IMAGE_DOWNSCALES not in json.loads((good / LATENTS_FILE).read_text())


@pytest.mark.parametrize("chain", [[], [128, 256], [256, 0], [256.0, 128], "256,128"])
def test_a_malformed_chain_is_refused_naming_the_file(tmp_path, chain):
    full = cell_noise(side=256)
    store_v1_reference(tmp_path, full, 128)
    storage.dump(tmp_path / LATENTS_FILE, LATENTS_KIND, {"case": "m/bf16", "cpu_class": "x", "projections": PROJ,
                                                         IMAGE_DOWNSCALES: chain})
    with pytest.raises(StoredFileError, match=f"{tmp_path / LATENTS_FILE}: image_downscales must be"):
        regression(full, tmp_path)


def test_latents_files_of_version_1_read_as_2_and_newer_ones_are_refused(tmp_path):
    path = tmp_path / LATENTS_FILE
    path.write_text(json.dumps({"kind": LATENTS_KIND, "schema_version": 1, "case": "m/bf16", "projections": PROJ}))
    assert storage.load(path, LATENTS_KIND)["schema_version"] == 2
    path.write_text(json.dumps({"kind": LATENTS_KIND, "schema_version": 3, "projections": PROJ}))
    with pytest.raises(StoredFileError, match="schema_version 3; this code reads schema_version 1 and 2 only"):
        storage.load(path, LATENTS_KIND)
    # other kinds are still version 1 only
    other = tmp_path / "baselines.json"
    storage.dump(other, "diffperf-baselines", {"cases": {}})
    assert json.loads(other.read_text())["schema_version"] == 1
    other.write_text(json.dumps({"kind": "diffperf-baselines", "schema_version": 2}))
    with pytest.raises(StoredFileError, match="reads schema_version 1 only"):
        storage.load(other, "diffperf-baselines")


def test_the_view_report_before_compaction_skips_pairs_it_cannot_compare(tmp_path):
    from diffperf.references import view_sensitivity

    full = cell_noise(side=512)
    for recipe, side in (("bf16", 256), ("bf16+fuse-qkv", 256), ("bf16+cudagraphs", 128)):
        folder = tmp_path / "m" / recipe
        folder.mkdir(parents=True)
        store_v1_reference(folder, full, side)
    rows = view_sensitivity(tmp_path, 128)  # a newer 128-px reference beside 256-px ones: no shape error
    assert [(r["recipe"], r["stored_px"], r["ssim_stored"]) for r in rows] == [("bf16+fuse-qkv", 256, 1.0)]
