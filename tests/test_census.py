"""Linear-layer shape census (diffperf.census, tools/census.py)."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from diffperf.census import take_census

ROOT = Path(__file__).resolve().parent.parent
LINEAR_LINE = re.compile(r"^\(torch\.Size\(\[\d+(, \d+)*\]\), torch\.Size\(\[\d+, \d+\]\), "
                         r"torch\.Size\(\[\d+(, \d+)*\]\)\): \d+,$")
S = __import__("torch").Size


def test_tiny_flux_schnell_linear_counts_per_block():
    # tiny FLUX: width 64, 3 double + 6 single blocks; 128 px -> 64 image tokens, 32 text tokens
    c = take_census("flux-schnell", 128, 128, 3, "tiny")
    assert [(x.role, x.name) for x in c.components] == [
        ("denoiser", "transformer"), ("vae", "vae"), ("text_encoder", "text_encoder"),
        ("text_encoder", "text_encoder_2")]
    den = c.components[0]
    assert den.calls == 3
    lin = den.linear
    # image stream: q, k, v, out of 3 double blocks, plus x_embedder and proj_out (64 -> 64 in the
    # tiny model too), per step
    assert lin[(S([1, 64, 64]), S([64, 64]), S([1, 64, 64]))] == (3 * 4 + 2) * 3
    # text stream: add_q, add_k, add_v, to_add_out of 3 double blocks
    assert lin[(S([1, 32, 64]), S([64, 64]), S([1, 32, 64]))] == 3 * 4 * 3
    # single blocks on the joint 96 tokens: q, k, v; then proj_mlp and proj_out
    assert lin[(S([1, 96, 64]), S([64, 64]), S([1, 96, 64]))] == 6 * 3 * 3
    assert lin[(S([1, 96, 64]), S([256, 64]), S([1, 96, 256]))] == 6 * 3
    assert lin[(S([1, 96, 320]), S([64, 320]), S([1, 96, 64]))] == 6 * 3
    # double-block feed-forward of the image stream, and the context embedder (T5 width 32)
    assert lin[(S([1, 64, 64]), S([256, 64]), S([1, 64, 256]))] == 3 * 3
    assert lin[(S([1, 32, 32]), S([64, 32]), S([1, 32, 64]))] == 3
    # attention is no nn.Linear: listed apart, once per block and step
    sdpa = {k: n for k, n in den.other.items() if k[0] == "scaled_dot_product_attention"}
    assert sum(sdpa.values()) == (3 + 6) * 3
    assert all(k[1][0] == S([1, 4, 96, 16]) for k in sdpa)


def test_census_cli_output_format_and_errors():
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "census.py"), "--model", "flux-schnell", "--size", "tiny",
         "--resolution", "128", "--steps", "3", "--text-tokens", "24"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    headers = [ln for ln in lines if ln.startswith("== ")]
    assert headers == [
        "== denoiser: transformer (FluxTransformer2DModel), 3 calls ==",
        "== VAE: vae (AutoencoderKL), 1 call ==",
        "== text encoder: text_encoder (CLIPTextModel), 1 call ==",
        "== text encoder: text_encoder_2 (T5EncoderModel), 1 call ==",
    ]
    section, linear_lines = None, {}
    for ln in lines:
        if ln.startswith("== "):
            comp = ln
        elif ln.startswith("-- "):
            section = ln
        elif ln and not ln.startswith("#") and section == "-- nn.Linear --":
            assert LINEAR_LINE.match(ln), ln
            linear_lines.setdefault(comp, []).append(ln)
    assert len(linear_lines) == 4
    # sorted by shapes, and the text length reached the T5 encoder and the transformer
    for comp, ls in linear_lines.items():
        keys = [tuple(tuple(map(int, re.findall(r"\d+", s))) for s in re.findall(r"\[[\d, ]*\]", ln)) for ln in ls]
        assert keys == sorted(keys), comp
    assert "(torch.Size([1, 24, 64]), torch.Size([64, 64]), torch.Size([1, 24, 64])): 36," in lines
    assert "(torch.Size([1, 24, 32]), torch.Size([32, 32]), torch.Size([1, 24, 32])): 8," in lines  # T5 q,k,v,o x2

    spec = importlib.util.spec_from_file_location("census_tool", ROOT / "tools" / "census.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    import io
    from contextlib import redirect_stderr

    err = io.StringIO()
    with redirect_stderr(err):
        assert tool.main(["--model", "flux-shnell"]) == 2
    assert "unknown model 'flux-shnell'" in err.getvalue() and "flux-schnell" in err.getvalue()
    err = io.StringIO()
    with redirect_stderr(err):
        assert tool.main(["--model", "sd21-base", "--size", "tiny", "--text-tokens", "100"]) == 2
    assert "fixed at 77" in err.getvalue()
