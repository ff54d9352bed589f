"""Where reference images live, and the SSIM/PSNR thresholds the accuracy tests apply."""
from __future__ import annotations

from pathlib import Path

from .errors import StoredFileError, UsageError
from .recipes import Recipe, parse_recipe


def tier_references(root: Path, tier: str, weights: str) -> Path:
    # references of other weights never mix: pretrained ones live in "<tier>.pretrained", synthetic
    # ones of another seed in "<tier>.synthetic-seedN"
    return Path(root) / (tier if weights == "synthetic" else f"{tier}.{weights}")


def reference_dir(root: Path, tier: str, weights: str, model: str, recipe: str) -> Path:
    return tier_references(root, tier, weights) / model / recipe.replace("/", "_")


# Regression: same case, same machine and stack. Synthetic-weight images are noise-like and
# hide small faults (one corrupted weight of a tiny FLUX: SSIM 0.9996), so the sharp check is
# on the final latents (relative distance of their projections); the image thresholds catch
# gross damage. How these were measured: README "Accuracy thresholds".
REGRESSION = {
    "cpu": {"ssim": 0.99, "psnr": 40.0, "latent": 1e-3},
    "gpu": {"ssim": 0.98, "psnr": 35.0, "latent": 2e-2},
}
LATENTS_KIND = "diffperf-latents"
LATENTS_FILE = "latents.json"


# A reference's `image_downscales` (latents file, schema_version 2): the sides its stored images
# were downscaled to, in order, from the generated image (accuracy.stored_view); absent, one
# downscale to REFERENCE_MAX_SIDE. `tools/update_baselines.py --compact-references` appends to it.
IMAGE_DOWNSCALES = "image_downscales"


def image_downscales(stored: dict, path: Path) -> tuple[int, ...] | None:
    """The reference's chain of downscales (None: a direct view); a malformed one is an error naming
    the file."""
    chain = stored.get(IMAGE_DOWNSCALES)
    if chain is None:
        return None
    if (not isinstance(chain, list) or not chain or any(type(s) is not int or s < 1 for s in chain)
            or any(a <= b for a, b in zip(chain, chain[1:]))):
        raise StoredFileError(f"{path}: {IMAGE_DOWNSCALES} must be a list of decreasing positive pixel sizes, "
                              f"got {chain!r}; restore it from git or regenerate it with tools/update_baselines.py "
                              f"--references")
    return tuple(chain)


def missing_references(root: Path, tier: str, weights: str, case_ids) -> list[str]:
    """The case ids (model/recipe) with no stored reference (latents file) under `root`: their image
    check is not judged, and fails under --perf-require-baselines."""
    return [cid for cid in case_ids
            if not (reference_dir(root, tier, weights, *cid.split("/", 1)) / LATENTS_FILE).is_file()]


# Fidelity: a case against its reference recipe (same dtype, eager, no cache, no quantization).
FIDELITY = {
    "cpu": {"lossless": 0.99, "lossy": 0.60},
    # lossless: measured on H100 (FLUX.1-dev, 256 px views) 0.9997 (SDPA flash) and 0.998 (full
    # compile, max-autotune); lossy: not yet measured on a GPU for quantization, and step caches
    # on synthetic weights barely move the image (TeaCache 0.6: 0.9995), so it stays a gross check
    "gpu": {"lossless": 0.99, "lossy": 0.30},
}


def recipe_class(recipe: Recipe) -> str:
    return "lossless" if recipe.lossless else "lossy"


# A quantized denoiser compiled afresh does not reproduce its latents exactly on a GPU: two
# compiles on the H100 (two machines, 2026-11-26) differed by latent distance 0.037 (SD3 float8
# dynamic), 0.019 (PixArt int8 dynamic), 0.012 (FLUX.1-schnell float8), 0 to 0.011 elsewhere
GPU_QUANTIZED_COMPILED_LATENT = 6e-2


def regression_threshold(tier_device: str, recipe: Recipe | None = None) -> dict[str, float]:
    thr = REGRESSION["cpu" if tier_device == "cpu" else "gpu"]
    if tier_device != "cpu" and recipe is not None and recipe.quant and recipe.compile:
        return {**thr, "latent": GPU_QUANTIZED_COMPILED_LATENT}
    return thr


def cpu_class_sensitive(recipe: Recipe) -> bool:
    """Whether a cpu-tier image depends on the CPU's kernel class (machine.cpu_class): bf16 / fp16
    and int8 dynamic quantization run ISA-specific kernels (AVX2 emulation vs AVX-512-BF16 / AMX /
    VNNI). Measured: references made on an AVX-512 machine gave latent distances of 1.4e-3 to
    1.1e-1 on an AVX2 machine for these recipes, and at most 2.3e-5 for fp32 ones."""
    return recipe.dtype != "fp32" or recipe.quant == "int8dq"


def fidelity_threshold(tier_device: str, recipe: Recipe, model_floor: float | None = None) -> float:
    """model_floor: the model's own lossless floor (ModelSpec.synthetic_lossless_ssim), which can only lower it."""
    thr = FIDELITY["cpu" if tier_device == "cpu" else "gpu"][recipe_class(recipe)]
    return thr if model_floor is None else min(thr, model_floor)


def compact_references(tier_dir: Path, side: int) -> list[Path]:
    """Downscale every reference image under `tier_dir` larger than `side` pixels (the view the
    tests compare at, accuracy.reference_view), and append `side` to its reference's
    image_downscales, so that a run's image is brought to the same view by the same chain; returns
    the files rewritten. A folder of such images without its latents file is refused before
    anything is written."""
    # start-up: diffperf.accuracy loads scikit-image; only rewriting or checking stored references needs it
    from . import accuracy, storage

    plan = {}
    for path in sorted(Path(tier_dir).rglob("*.png")):
        img = accuracy.load_png(path)
        if max(img.shape[:2]) > side:
            plan.setdefault(path.parent, []).append((path, img))
    for folder, images in plan.items():
        if not (folder / LATENTS_FILE).is_file():
            raise StoredFileError(f"{folder} holds images larger than {side} px but no {LATENTS_FILE}: its "
                                  f"downscale could not be recorded; nothing was written")
        sizes = {max(img.shape[:2]) for _, img in images}
        if len(sizes) > 1:
            raise StoredFileError(f"{folder} holds images of different sizes ({sorted(sizes)} px); nothing was written")
    done = []
    for folder, images in plan.items():
        latents_path = folder / LATENTS_FILE
        stored = storage.load(latents_path, LATENTS_KIND)
        body = {k: v for k, v in stored.items() if k not in ("kind", "schema_version")}
        chain = list(image_downscales(stored, latents_path) or (max(images[0][1].shape[:2]),))
        for path, img in images:
            tmp = path.with_name(f".tmp-{path.name}")  # keeps .png: PIL picks the format by it
            accuracy.save_png(accuracy.reference_view(img, side), tmp)
            tmp.replace(path)
            done.append(path)
        storage.dump(latents_path, LATENTS_KIND, {**body, IMAGE_DOWNSCALES: chain + [side]})
    return done


def view_sensitivity(tier_dir: Path, side: int) -> list[dict]:
    """What a smaller view does to SSIM: for every recipe of a model with images of its reference
    recipe, the worst SSIM over prompts against that reference at the stored size and at `side`.
    Only pairs the compaction changes count: both images of one size, larger than `side`."""
    # start-up: diffperf.accuracy loads scikit-image; only rewriting or checking stored references needs it
    from . import accuracy

    rows = []
    for model_dir in sorted(p for p in Path(tier_dir).iterdir() if p.is_dir()):
        recipes = {p.name: p for p in model_dir.iterdir() if p.is_dir()}
        for name, rdir in sorted(recipes.items()):
            try:
                ref_name = parse_recipe(name).reference.name
            except UsageError as exc:  # a folder that is no recipe: named, not skipped silently
                raise ValueError(f"{rdir} is not a recipe folder: {exc}") from exc
            if ref_name == name or ref_name not in recipes:
                continue
            stored, small = [], []
            for png in sorted(rdir.glob("*.png")):
                other = recipes[ref_name] / png.name
                if not other.exists():
                    continue
                a, b = accuracy.load_png(png), accuracy.load_png(other)
                if a.shape != b.shape or max(a.shape[:2]) <= side:
                    continue
                stored.append(accuracy.compare(a, b)["ssim"])
                small.append(accuracy.compare(accuracy.reference_view(a, side), accuracy.reference_view(b, side))["ssim"])
            if stored:
                rows.append({"model": model_dir.name, "recipe": name, "reference_recipe": ref_name,
                             "class": recipe_class(parse_recipe(name)), "stored_px": max(a.shape[:2]),
                             "ssim_stored": min(stored), "view_px": side, "ssim_view": min(small)})
    return rows
