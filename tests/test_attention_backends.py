"""The fa2 / fa3 / sage knobs skip exactly when diffusers' dispatcher would refuse the backend.

diffusers decides which backends it can use when it is imported, so each set of stand-in packages
(directories on PYTHONPATH with the modules and the distribution metadata the real ones install)
is judged in a fresh Python process."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from diffperf.knobs import attention
from diffperf.knobs.skip import CaseSkip

ROOT = Path(__file__).resolve().parents[1]
TOKENS = ("fa2", "fa3", "sage")
SAGE_NAMES = ("sageattn", "sageattn_qk_int8_pv_fp8_cuda", "sageattn_qk_int8_pv_fp8_cuda_sm90",
              "sageattn_qk_int8_pv_fp16_cuda", "sageattn_qk_int8_pv_fp16_triton", "sageattn_varlen")


def _module(root: Path, relpath: str, names: tuple[str, ...] = ()) -> None:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"def {n}(*args, **kwargs):\n    raise NotImplementedError\n" for n in names))


def _distribution(root: Path, name: str, version: str, files: list[str]) -> None:
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))


def _refused_set(root: Path) -> None:
    # flash-attn-4 installs flash_attn/cute only: flash_attn is a namespace package with no
    # distribution called flash_attn
    _module(root, "flash_attn/cute/__init__.py", ("flash_attn_func",))
    _distribution(root, "flash-attn-4", "4.0.0b1", ["flash_attn/cute/__init__.py"])
    # sageattention 1.x has sageattn, but diffusers needs >= 2.1.1
    _module(root, "sageattention/__init__.py", SAGE_NAMES)
    _distribution(root, "sageattention", "1.0.6", ["sageattention/__init__.py"])
    # an FA3 module without the flash_attn_3 distribution diffusers looks for
    _module(root, "flash_attn_interface.py", ("flash_attn_func", "flash_attn_varlen_func"))


def _accepted_set(root: Path) -> None:
    _module(root, "flash_attn/__init__.py", ("flash_attn_func", "flash_attn_varlen_func"))
    _module(root, "flash_attn/flash_attn_interface.py", ("_wrapped_flash_attn_backward", "_wrapped_flash_attn_forward"))
    _distribution(root, "flash_attn", "2.7.4", ["flash_attn/__init__.py", "flash_attn/flash_attn_interface.py"])
    _module(root, "sageattention/__init__.py", SAGE_NAMES)
    _distribution(root, "sageattention", "2.2.0", ["sageattention/__init__.py"])
    _module(root, "flash_attn_3/__init__.py")
    _module(root, "flash_attn_interface.py", ("flash_attn_func", "flash_attn_varlen_func"))
    _distribution(root, "flash_attn_3", "3.0.0b1", ["flash_attn_3/__init__.py", "flash_attn_interface.py"])


JUDGE = textwrap.dedent("""
    import json, torch
    from diffperf.knobs.attention import check
    from diffperf.knobs.skip import CaseSkip
    out = {}
    for token in %r:
        try:
            check(token, True, torch.device("cpu"), "flux-dev")
            out[token] = None
        except CaseSkip as e:
            out[token] = str(e)
    print("VERDICTS " + json.dumps(out))
""" % (TOKENS,))


def _judge(packages: Path) -> dict[str, str | None]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(packages), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", JUDGE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("VERDICTS ")]
    assert line, proc.stdout[-2000:]
    return json.loads(line[-1].removeprefix("VERDICTS "))


def test_packages_diffusers_refuses_skip_with_its_reason(tmp_path):
    _refused_set(tmp_path)
    verdicts = _judge(tmp_path)
    assert all(v is not None and "refuses its backend" in v for v in verdicts.values()), verdicts
    assert "no distribution metadata" in verdicts["fa2"] and "flash-attn>=2.6.3" in verdicts["fa2"]
    assert "1.0.6" in verdicts["sage"] and "sageattention>=2.1.1" in verdicts["sage"]
    assert "'flash_attn_3' is not installed" in verdicts["fa3"]


def test_packages_diffusers_accepts_pass_the_package_check(tmp_path):
    # the stand-ins satisfy diffusers; the case then skips for the next reason: no CUDA GPU here
    _accepted_set(tmp_path)
    verdicts = _judge(tmp_path)
    assert all(v is not None and "needs a CUDA GPU" in v and "refuses" not in v for v in verdicts.values()), verdicts


@pytest.mark.parametrize("token", TOKENS)
def test_absent_package_skips_naming_it(token):
    if importlib.util.find_spec(attention.PACKAGE[token]) is not None:
        pytest.skip(f"{attention.PACKAGE[token]} is installed here")
    with pytest.raises(CaseSkip, match=f"'{attention.PACKAGE[token]}' is not installed"):
        attention.check(token, True, torch.device("cuda"), "flux-dev")
    assert attention.diffusers_refusal(token) is not None


@pytest.mark.parametrize("token", ["sdpa-flash", "sdpa-cudnn"])
def test_half_only_sdpa_kernels_skip_an_fp32_recipe_on_cuda(token):
    from diffperf.knobs.attention import check

    with pytest.raises(CaseSkip, match="fp16 / bf16 inputs only"):
        check(token, False, torch.device("cuda"), "sd21-base", "fp32")
    check(token, False, torch.device("cuda"), "sd21-base", "bf16")  # bf16: no reason to skip


def test_an_attention_call_the_chosen_kernel_cannot_take_skips_the_case_naming_it():
    import torch.nn.functional as F

    from diffperf.knobs.attention import sdpa_only

    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(CaseSkip, match="attention 'sdpa-efficient': torch's efficient kernel cannot take"):
        with sdpa_only("sdpa-efficient"):  # no such kernel on the CPU: torch finds none to run
            F.scaled_dot_product_attention(q, q, q)
    with pytest.raises(ValueError):  # any other error stays the case's failure
        with sdpa_only("sdpa-math"):
            raise ValueError("not an attention kernel's refusal")
