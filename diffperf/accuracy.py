"""Image comparison: SSIM (scikit-image) and PSNR, image sanity checks, PNG round trip."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from .errors import StoredFileError


class BadImage(AssertionError):
    """A generated image that cannot be right (NaN, infinite, constant)."""


def check_image(img: np.ndarray, what: str) -> None:
    if not np.isfinite(img).all():
        bad = int((~np.isfinite(img)).sum())
        raise BadImage(f"{what}: {bad} of {img.size} values are NaN or infinite")
    if float(img.max()) == float(img.min()):
        raise BadImage(f"{what}: image is constant ({float(img.min()):.4f}) — the model produced no signal")


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(np.nan_to_num(img, nan=0.0), 0.0, 1.0) * 255.0).round().astype(np.uint8)


def save_png(img: np.ndarray, path: Path) -> None:
    """Lossless PNG of the uint8-quantised image (the quantisation is the only loss: <= 0.5/255)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(img)).save(path, optimize=True)


def load_png(path: Path, expect_shape: tuple[int, ...] | None = None) -> np.ndarray:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StoredFileError(f"reference image {path} cannot be read: {exc}") from exc
    if expect_shape is not None and arr.shape != tuple(expect_shape):
        # before SSIM, which would fail on the shapes with a message naming neither file nor sizes
        raise StoredFileError(f"reference {path} is {arr.shape[1]}x{arr.shape[0]}, image is "
                              f"{expect_shape[1]}x{expect_shape[0]} (width x height; shapes {arr.shape} vs "
                              f"{tuple(expect_shape)}); regenerate it with tools/update_baselines.py --references, or "
                              f"downscale a larger one with --compact-references")
    return arr


# Full-size images are stored (references, device results) at most this many pixels on a side:
# random-weight images are noise that PNG cannot compress (2.5 MB at 1024 px, ~160 KB at 256 px,
# ~45 KB at 128 px), and the sharp regression check is on the latents anyway; the image check only
# has to catch gross damage. What 256 -> 128 px does to SSIM, measured on the H100 references:
# README "Reference images of full-size models" (tools/update_baselines.py --compact-references).
REFERENCE_MAX_SIDE = 128


def reference_view(img: np.ndarray, side: int = REFERENCE_MAX_SIDE) -> np.ndarray:
    """The image as references store it: downscaled (area-averaging) to `side` pixels at most."""
    # start-up: skimage.transform loads on first use; only downscaling an image needs it
    from skimage.transform import resize

    h, w = img.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return img
    shape = (max(1, round(h * scale)), max(1, round(w * scale))) + img.shape[2:]
    return resize(img, shape, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)


def stored_view(img: np.ndarray, downscales: tuple[int, ...] | None = None) -> np.ndarray:
    """The image as a reference made by these successive downscales stores it (None: one
    reference_view): each a reference_view, rounded to 8 bits (a PNG) before the next. A chain is
    not one downscale: on the H100 a Kandinsky-3 image downscaled 1024 -> 256 -> 128 px against
    1024 -> 128 px, with equal latents, scored SSIM 0.985 and PSNR 28 dB (noise-like images keep
    the filters' difference); references.image_downscales says which chain a reference went through."""
    if not downscales:
        return reference_view(img)
    for i, side in enumerate(downscales):
        if i:
            img = to_uint8(img).astype(np.float32) / 255.0
        img = reference_view(img, side)
    return img


def latent_projection(latents, k: int = 256, seed: int = 0) -> list[float]:
    """k seeded Gaussian projections of the final latents (Johnson-Lindenstrauss): the relative
    distance of two projections estimates the relative distance of the full latents, so a
    reference costs k numbers instead of the whole tensor. Same device -> same projection."""
    x = latents.detach().reshape(-1).float()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    rows = []
    for _ in range(0, k, 32):  # chunks keep the projection matrix small for 1024px latents
        p = torch.randn(32, x.numel(), generator=gen, device=x.device)
        rows.append(p @ x)
    out = torch.cat(rows)[:k] / math.sqrt(x.numel())
    return [float(v) for v in out.cpu()]


def latent_distance(a: list[float], b: list[float]) -> float:
    """Relative L2 distance ||a - b|| / ||b|| of two latent projections."""
    # a stored projection holds null where the latents were not finite (record.storable)
    a, b = (np.asarray([np.nan if v is None else v for v in x], dtype=np.float64) for x in (a, b))
    if a.shape != b.shape:
        raise ValueError(f"latent projections of different lengths: {a.shape} vs {b.shape}")
    if not np.isfinite(a).all():
        return float("inf")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def compare(img: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """SSIM with Gaussian weights (sigma 1.5, as Wang et al.) over RGB, data range 1; PSNR in dB
    (inf for identical images is reported as 99)."""
    a = to_uint8(img).astype(np.float64) / 255.0
    b = to_uint8(ref).astype(np.float64) / 255.0
    ssim = structural_similarity(a, b, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    mse = float(np.mean((a - b) ** 2))
    psnr = 99.0 if mse == 0 else float(peak_signal_noise_ratio(b, a, data_range=1.0))
    return {"ssim": float(ssim), "psnr": min(psnr, 99.0)}
