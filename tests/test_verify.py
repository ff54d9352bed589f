"""The 'verify' knob: a Freivalds check of every Linear output catches a corrupted matmul, names
its layer and step, and passes honest runs (fp32 and bf16) on tiny models on the CPU."""
import math
import types

import numpy as np
import pytest
import torch
from torch import nn

from diffperf.build import build_case
from diffperf.cases import Case, cases_for_tier
from diffperf.errors import UsageError
from diffperf.knobs import verify
from diffperf.knobs.skip import CaseSkip
from diffperf.knobs.verify import VerificationError
from diffperf.measure import generate, measure
from diffperf.options import PerfOptions, add_options, parse_options
from diffperf.recipes import parse_recipe
from diffperf.tiers import get_tier

CPU = get_tier("cpu")
PROMPT = "a red cube"


def build(model, recipe, fault=None):
    return build_case(Case(model, parse_recipe(recipe), "standard"), CPU, PerfOptions(verify_fault=fault))


def count_linear_calls(built):
    calls = {"n": 0}
    for comp in built.pipe.components.values():
        if isinstance(comp, nn.Module):
            for m in comp.modules():
                if isinstance(m, nn.Linear):
                    m.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    return calls


def test_honest_fp32_run_checks_every_linear_call():
    b = build("flux-dev", "fp32+verify")
    calls = count_linear_calls(b)
    generate(b, PROMPT, 0)
    rep = b.knobs["verify"]
    assert calls["n"] > 0 and rep["checks"] == calls["n"]
    assert rep["failed_checks"] == 0 and rep["failures"] == [] and rep["pipeline_calls"] == 1
    assert 0 < rep["worst_rel_error"] and rep["worst_rel_to_tol"] < 1
    # every component is verified: denoiser, both text encoders, the VAE
    assert set(rep["layers_per_component"]) == {"transformer", "text_encoder", "text_encoder_2", "vae"}
    assert all(n > 0 for n in rep["layers_per_component"].values())


def test_verify_does_not_change_the_image():
    a = generate(build("flux-dev", "fp32"), PROMPT, 0)
    c = generate(build("flux-dev", "fp32+verify"), PROMPT, 0)
    assert np.array_equal(a, c)


def test_honest_bf16_run_passes_with_the_dtype_tolerance():
    b = build("pixart-sigma", "bf16+verify")
    generate(b, PROMPT, 0)
    rep = b.knobs["verify"]
    assert rep["checks"] > 0 and rep["failed_checks"] == 0
    assert rep["tol_min"] == pytest.approx(8 * 2 ** -8, rel=1e-3)  # 8 u(bf16), fp32 accumulation aside
    assert rep["worst_rel_error"] < rep["tol_min"]


@pytest.mark.parametrize("fault, message", [
    ("transformer_blocks.0.ff.net.2@1", r"in transformer\.transformer_blocks\.0\.ff\.net\.2 at denoising step 1: "
                                        r"rel\. error \S+ > tol"),
    ("single_transformer_blocks.1.attn.to_q@3", r"in transformer\.single_transformer_blocks\.1\.attn\.to_q at "
                                                r"denoising step 3:"),
    ("text_encoder_2.encoder.block.0.layer.1.DenseReluDense.wo@0",
     r"in text_encoder_2\.encoder\.block\.0\.layer\.1\.DenseReluDense\.wo during text encoding"),
])
def test_injected_fault_is_caught_naming_layer_and_step(fault, message):
    b = build("flux-dev", "fp32+verify", fault=fault)
    with pytest.raises(VerificationError, match=message):
        generate(b, PROMPT, 0)
    failures = b.knobs["verify"]["failures"]
    # only the corrupted call fails: the layers after it compute honestly from a wrong input
    assert len(failures) == 1
    layer, step = fault.rsplit("@", 1)
    assert failures[0]["layer"].endswith(layer) and failures[0]["step"] == int(step)


def test_fault_in_bf16_is_caught():
    b = build("pixart-sigma", "bf16+verify", fault="transformer_blocks.1.ff.net.2@2")
    with pytest.raises(VerificationError, match=r"transformer_blocks\.1\.ff\.net\.2 at denoising step 2"):
        generate(b, PROMPT, 0)


def _flip_one_weight_during_forward(linear: nn.Linear):
    """The matmul reads a corrupted weight, the weight in memory is intact afterwards (a bad load,
    a stale copy): what Freivalds is for."""
    def corrupt(module, args):
        module._saved = module.weight.data.clone()
        module.weight.data[0, 0] += 100.0

    def restore(module, args, output):
        module.weight.data.copy_(module._saved)

    linear.register_forward_pre_hook(corrupt)
    linear.register_forward_hook(restore, prepend=True)  # before the check reads the weight


def test_matmul_with_a_corrupted_weight_is_caught():
    b = build("flux-dev", "fp32+verify")
    _flip_one_weight_during_forward(b.denoiser.transformer_blocks[0].attn.to_v)
    with pytest.raises(VerificationError, match=r"transformer\.transformer_blocks\.0\.attn\.to_v at denoising step 0"):
        generate(b, PROMPT, 0)


def test_weight_corrupted_in_memory_is_not_its_business():
    # Freivalds checks y = x·Wᵀ + b for the weight the layer holds: a weight corrupted in memory
    # (after setup) is used consistently by the matmul and the check, so the run passes while
    # the image changes. Weight integrity needs a checksum, not this knob.
    clean = generate(build("flux-dev", "fp32"), PROMPT, 0)
    b = build("flux-dev", "fp32+verify")
    with torch.no_grad():
        b.denoiser.transformer_blocks[0].attn.to_v.weight.mul_(-1)
    image = generate(b, PROMPT, 0)
    assert b.knobs["verify"]["failed_checks"] == 0
    assert not np.array_equal(clean, image)


def test_weight_only_quantized_linears_are_checked_dequantized():
    from diffperf.knobs.quantize import count_quantized

    b = build("pixart-sigma", "fp32+int8wo+verify")
    assert count_quantized(b.denoiser) > 0
    generate(b, PROMPT, 0)
    rep = b.knobs["verify"]
    assert rep["checks"] > 0 and rep["failed_checks"] == 0


@pytest.mark.parametrize("recipe", ["fp32+int8dq+verify", "fp32+te-int8dq+verify"])
def test_dynamic_activation_quantization_is_refused(recipe):
    with pytest.raises(CaseSkip, match="quantizes the activations"):
        build("pixart-sigma", recipe)


def test_measure_keeps_its_stage_probe_and_the_step_counter():
    b = build("flux-dev", "fp32+verify")
    ours = b.pipe.scheduler.step
    m = measure(b, PROMPT, 0, warmup=0, iterations=1)
    assert b.pipe.scheduler.step is ours  # measure's wrapper came off, ours stayed
    assert len(m.stages[0]["steps_s"]) == b.spec.tiny.steps
    rep = b.knobs["verify"]
    assert rep["pipeline_calls"] == 3 and rep["failed_checks"] == 0  # cold, timed, memory call
    assert rep["worst_step"] is not None and 0 <= rep["worst_step"] <= b.spec.tiny.steps


def test_verify_case_is_in_the_cpu_tier():
    ids = {c.id for c in cases_for_tier(CPU)}
    assert {"flux-dev/fp32+verify", "sd21-base/fp32+verify"} <= ids


# -- fault option ------------------------------------------------------------------------------


def test_parse_fault():
    assert verify.parse_fault("blocks.3.ff@2") == verify.Fault("blocks.3.ff", 2)
    assert verify.parse_fault("a@b@0") == verify.Fault("a@b", 0)
    assert verify.parse_fault(None) is None and verify.parse_fault("") is None
    for bad in ("blocks.3", "@1", "x@-1", "x@one", "x@"):
        with pytest.raises(UsageError, match="LAYER_SUBSTRING@STEP"):
            verify.parse_fault(bad)


def _options(**given):
    import argparse

    class Group:
        def __init__(self):
            self.parser = argparse.ArgumentParser()

        def getgroup(self, *a, **k):
            return self

        def addoption(self, *args, **kwargs):
            self.parser.add_argument(*args, **kwargs)

    g = Group()
    add_options(g)
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in given.items()]
    ns = g.parser.parse_args(argv)
    return parse_options(lambda name: getattr(ns, name))


def test_fault_option_is_validated():
    assert _options(perf_verify_fault="ff.net.2@1").verify_fault == "ff.net.2@1"
    assert _options().verify_fault is None
    with pytest.raises(UsageError, match="LAYER_SUBSTRING@STEP"):
        _options(perf_verify_fault="ff.net.2")


def test_fault_naming_no_layer_is_a_usage_error():
    with pytest.raises(UsageError, match="no verified Linear"):
        build("flux-dev", "fp32+verify", fault="no_such_layer@0")


# -- the check itself, on toy modules ----------------------------------------------------------


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(x)))


class Toy(nn.Module):
    def __init__(self, d=32, n=3):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d) for _ in range(n))

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def toy_pipe(dtype=torch.float32):
    torch.manual_seed(0)
    return types.SimpleNamespace(net=Toy().to(dtype), scheduler=types.SimpleNamespace(step=lambda x: x))


def run_toy(pipe, state, steps, dtype=torch.float32):
    x = torch.randn(2, 16, 32, dtype=dtype, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(), state.call_context():
        for _ in range(steps):
            x = pipe.scheduler.step(pipe.net(x))
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_toy_counts_and_tolerance(dtype):
    pipe = toy_pipe(dtype)
    state = verify.apply(pipe, {"net": "denoiser"}, steps=3, device=torch.device("cpu"))
    run_toy(pipe, state, 3, dtype)
    rep = state.report
    assert rep["checks"] == 3 * 6 and rep["failed_checks"] == 0 and rep["checked_layers"] == 6
    assert rep["worst_rel_to_tol"] < 1
    state.remove()
    assert not any(k.startswith("_verify") for m in pipe.net.modules() for k in m._buffers)
    assert all(not m._forward_hooks for m in pipe.net.modules())


def test_tolerance_formula():
    n = 3072
    assert verify.tolerance(torch.bfloat16, n, n) == pytest.approx(8 * (2 ** -8 + 2 ** -24 * math.sqrt(n)))
    assert verify.tolerance(torch.float16, n, 4 * n) == pytest.approx(8 * (2 ** -11 + 2 ** -24 * math.sqrt(4 * n)))
    prec = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert verify.tolerance(torch.float32, n, n) == pytest.approx(8 * 2 ** -24 * (1 + math.sqrt(n)))
        torch.set_float32_matmul_precision("high")  # TF32 inputs
        assert verify.tolerance(torch.float32, n, n) > 8 * 2 * 2 ** -11
    finally:
        torch.set_float32_matmul_precision(prec)


def test_single_corrupted_element_is_caught():
    pipe = toy_pipe()
    state = verify.apply(pipe, {"net": "denoiser"}, steps=2, device=torch.device("cpu"))
    target = pipe.net.blocks[1].up

    def corrupt(module, args, output):
        out = output.clone()
        out[1, 5, 7] += 10 * output.abs().max()  # one element of one call
        return out

    target.register_forward_hook(corrupt, prepend=True)
    with pytest.raises(VerificationError, match=r"net\.blocks\.1\.up at denoising step 0"):
        run_toy(pipe, state, 2)


def test_nan_output_fails():
    pipe = toy_pipe()
    state = verify.apply(pipe, {"net": "denoiser"}, steps=1, device=torch.device("cpu"))
    pipe.net.blocks[2].down.register_forward_hook(lambda m, a, o: o * float("nan"), prepend=True)
    with pytest.raises(VerificationError, match=r"net\.blocks\.2\.down .* rel\. error inf"):
        run_toy(pipe, state, 1)


def test_regional_compile_traces_the_checks_without_recompiling():
    # the hooks are traced into each compiled block; every block shares one graph (no per-layer
    # constants), and the device-side step counter and refilled r bank cause no recompilation
    torch._dynamo.reset()
    pipe = toy_pipe()
    state = verify.apply(pipe, {"net": "denoiser"}, steps=3, device=torch.device("cpu"),
                         fault=verify.Fault("blocks.2.down", 2))
    for blk in pipe.net.blocks:
        blk.compile(fullgraph=True)
    with pytest.raises(VerificationError, match=r"net\.blocks\.2\.down at denoising step 2"):
        run_toy(pipe, state, 3)  # compiles: one graph for blocks 0-1, one for block 2 (fault hook)
    with torch.compiler.set_stance("fail_on_recompile"), pytest.raises(VerificationError, match="step 2"):
        run_toy(pipe, state, 3)
    rep = state.report
    assert rep["checks"] == 2 * 3 * 6 and rep["failed_checks"] == 2
    torch._dynamo.reset()


def test_fused_check_matches_the_eager_one():
    # the compiled form the GPU uses (reductions that inductor fuses), here on the CPU
    torch._dynamo.reset()
    results = {}
    for fused in (False, True):
        pipe = toy_pipe()
        state = verify.apply(pipe, {"net": "denoiser"}, steps=2, device=torch.device("cpu"), fused=fused,
                             fault=verify.Fault("blocks.1.up", 1))
        with pytest.raises(VerificationError, match=r"net\.blocks\.1\.up at denoising step 1"):
            run_toy(pipe, state, 2)
        results[fused] = state.report
    assert results[True]["fused"] and results[True]["checks"] == results[False]["checks"] == 12
    assert results[True]["worst_rel_error"] == pytest.approx(results[False]["worst_rel_error"], rel=1e-3)
    torch._dynamo.reset()
