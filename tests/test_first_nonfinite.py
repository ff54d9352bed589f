"""tools/first_nonfinite.py names the first denoiser module whose output is not finite."""
import pytest
import torch

from diffperf import build
from diffperf.cli import first_nonfinite


def test_names_the_module_that_first_makes_nan(monkeypatch, capsys):
    real_build = build.build_case  # the commands build their case through diffperf.build (cli.common)

    def build_with_a_nan_weight(*args, **kwargs):
        built = real_build(*args, **kwargs)
        with torch.no_grad():
            built.denoiser.transformer_blocks[1].attn.to_k.weight[0, 0] = float("nan")
        return built

    monkeypatch.setattr(build, "build_case", build_with_a_nan_weight)
    assert first_nonfinite.main(["--model", "flux-dev", "--recipe", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "transformer.transformer_blocks.1.attn.to_k (Linear), call 1" in out
    assert "non-finite 0" in out.split("inputs:")[1].split("output:")[0]  # what fed it was finite


def test_a_finite_case_says_so(capsys):
    assert first_nonfinite.main(["--model", "pixart-sigma", "--recipe", "fp32"]) == 0
    assert "every module output was finite" in capsys.readouterr().out


def test_refuses_a_compiled_recipe():
    with pytest.raises(SystemExit):
        first_nonfinite.main(["--model", "flux-dev", "--recipe", "bf16+compile"])


def test_counts_the_all_zero_rows_that_per_row_scaling_turns_into_nan():
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
    assert "max|finite| 2 all-zero rows 1 of 2" in first_nonfinite._describe([x])
