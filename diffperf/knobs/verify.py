"""Verified inference: a Freivalds check of every nn.Linear output of the pipeline.

For one call y = x Wᵀ + b of a Linear (x: rows x_i of `in` features, y: rows y_i of `out`
features) and a random Gaussian vector r of `out` entries, an honest matmul satisfies, row by row,

    D_i = y_i·r − x_i·(Wᵀr) − b·r = 0   up to rounding.

Computing Wᵀr reads W once (a matrix-vector product), y_i·r and x_i·(Wᵀr) read y and x once:
O(n²) work per call against the O(n³) of the matmul. A corrupted output row (y_i + e) gives
D_i = e·r ~ N(0, |e|²): caught unless r happens to be nearly orthogonal to e.

Tolerance. The check's arithmetic is fp32 from the layer's operands, except Wᵀr, which cuBLAS
computes in the weight's dtype (fp32 accumulation, one rounding; r is rounded to that dtype
first and the same r is used on both sides). So D_i holds the layer's honest error δ_i (output
rounding, accumulation) plus x_i·(Wᵀr rounded − Wᵀr). As r is drawn independently of δ_i,
δ_i·r ~ N(0, |δ_i|²) exactly; the rounding term is bounded as a sum of independent rounding
errors (the probabilistic model of rounding-error analysis). Both are bounded by

    u_eff · S_i,   S_i = |y_i|₂ + |x_i|₂·ω + |x_i ∘ Wᵀr|₂,   ω = max column norm of W,

where |y_i| covers the rounding of y to its dtype, |x_i|·ω the errors that grow with the
operands rather than the result (accumulation, TF32 / bf16 input rounding of fp32 matmuls,
reduced-precision split-K sums, dequantized weights) and |x_i ∘ Wᵀr| the rounding of Wᵀr, and

    u_eff = u_out + 2·u_in + 2⁻²⁴·√n,  n = max(in, out)

with u_out the unit roundoff of the output dtype (bf16 2⁻⁸, fp16 2⁻¹¹, fp32 2⁻²⁴), u_in the
rounding of the matmul inputs (0 for bf16 / fp16; for fp32 it follows
torch.get_float32_matmul_precision: 'high' TF32 2⁻¹¹, 'medium' bf16 2⁻⁸) and 2⁻²⁴·√n the fp32
accumulation of the GEMM and of the check's dot products. The check fails when

    rel_i = |D_i| / S_i > tol = K · u_eff,   K = 8,

i.e. at 8 standard deviations of the bound: P(|N(0,1)| > 8) ≈ 1e-15 per row, while a FLUX.1-dev
run at 1024² checks about 1e8 rows per image. (Round-to-nearest errors have an RMS of about
u/√3, so an honest run sits further below: FLUX.1-dev bf16 on an H100 peaked at rel 0.007 for
tol 0.031, the tiny models on the CPU at 0.15-0.25 of tol.) bf16: tol = 8·2⁻⁸ ≈ 0.031. What it
catches: a row whose error is larger than ~tol·S_i (a few percent of the row for bf16), with a
probability that grows with the size of the error and with the number of corrupted rows; a
single element corrupted by Δ is caught when |Δ·r_j| > tol·S_i.

What it cannot catch: weights corrupted in memory. The check recomputes Wᵀr from the weight the
layer holds now, so a matmul that faithfully used a corrupted weight passes; it verifies the
computation, not the weights (a checksum of the weights would).

Cost, and why it is shaped this way (a hand-rolled verifier ran 2.3x-3.4x slower). Measured on
one H100, FLUX.1-dev 1024², 28 steps (tools/verify_overhead.py): eager bf16 5.30 s ->
bf16+verify 6.95 s (x1.31); bf16+compile 3.96 s -> bf16+compile+verify 4.75 s (x1.20).
- no host sync per call. Eager calls keep their 0-d result in a list (with layer and step known
  on the host); calls traced into compiled blocks write it into per-layer device buffers at the
  step held in a device tensor. One transfer per pipeline call reads both
  (`VerifyState.call_context`). (An in-place record inside the eager compiled check tripled its
  per-call CPU cost: 290 against 90 µs.)
- r comes from a bank of Gaussian numbers refilled with one kernel per denoising step (a
  dedicated generator: the global RNG is untouched, and no RNG runs inside compiled code); each
  Linear reads its own slice, so r is fresh per layer and step.
- on CUDA the check is one torch.compile'd function (dynamic shapes): inductor fuses the fp32
  upcasts into row reductions, so x and y are each read once with no fp32 copy, and W once by
  cuBLAS. Under regional / full compile the hooks are traced into the compiled blocks and fused
  there, with no per-call Python cost. Eager runs are bound by the per-call CPU cost (~90 µs
  for the compiled check, plus the hook) more than by the extra reads.
  On the CPU the check runs eagerly (fp32 copies, BLAS matrix-vector products).

Steps: the step index is the number of `scheduler.step` calls made so far in the pipeline call
(guidance branches of one step share it). Text encoders run at step 0, before any denoising
step; the VAE decodes after the last one.

Quantized weights (torchao subclasses): weight-only quantization (int8wo, int4wo) is checked
against the dequantized weight (y = x·deq(W)ᵀ + b up to rounding); dynamic activation
quantization (int8dq, fp8dq*) multiplies a quantized copy of x, whose error is far above any
useful tolerance, so that combination is refused.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from ..errors import UsageError
from ..patching import patch_method
from .base import Field, Knob, KnobContext, skip_reason
from .skip import CaseSkip

K_SIGMA = 8.0
# unit roundoff of round-to-nearest per output dtype
UNIT_ROUNDOFF = {torch.float32: 2.0 ** -24, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
# input rounding of fp32 matmuls per torch.get_float32_matmul_precision()
FP32_MATMUL_INPUT_ROUNDOFF = {"highest": 0.0, "high": 2.0 ** -11, "medium": 2.0 ** -8}
DYNAMIC_QUANT = ("int8dq", "fp8dq", "fp8dq-tensor")
MAX_REPORTED_FAILURES = 20


class VerificationError(RuntimeError):
    """A Freivalds check failed: a Linear output does not match its inputs and weights."""


@dataclass(frozen=True)
class Fault:
    """Fault injection for tests: negate the output of the first verified Linear whose qualified
    name contains `layer`, at denoising step `step` (the step counter's value)."""

    layer: str
    step: int

    def __str__(self) -> str:
        return f"{self.layer}@{self.step}"


def parse_fault(text: str | None) -> Fault | None:
    """'LAYER_SUBSTRING@STEP' -> Fault; None or '' -> None."""
    if not text:
        return None
    layer, sep, step = text.rpartition("@")
    if not sep or not layer or not step.isdigit():
        raise UsageError(f"--perf-verify-fault wants LAYER_SUBSTRING@STEP (STEP an integer >= 0), got {text!r}")
    return Fault(layer, int(step))


def check(quant: str | None, te_quant: str | None) -> None:
    """Refuse, before building, the combinations verify cannot check."""
    for kind, where in ((quant, "the denoiser"), (te_quant, "the text encoders")):
        if kind in DYNAMIC_QUANT:
            raise CaseSkip(
                f"verify + {kind}: {kind} quantizes the activations of {where} on the fly, so a Linear "
                f"computes with a quantized copy of x whose error (~1/127 for int8, ~1/16 for float8) is far "
                f"above the rounding a Freivalds check can bound; checking it would need the quantized "
                f"operands inside torchao's kernel. Weight-only quantization (int8wo, int4wo) is verified"
            )


# -- the check ---------------------------------------------------------------------------------


def _weight(w: torch.Tensor) -> torch.Tensor:
    if type(w) in (torch.Tensor, nn.Parameter):
        return w
    return w.dequantize()  # torchao subclass; weight-only kinds only (see check / apply)


def _rel(x, y, w, b, r, omega, fused: bool) -> torch.Tensor:
    """Worst rel_i of one Linear call (x, y: 2-D rows) as a 0-d fp32 tensor; NaN / inf -> inf."""
    w = _weight(w)
    r = r.to(w.dtype)  # the r of both sides: exact in the weight's dtype
    rf = r.float()
    # Wᵀr by cuBLAS in the weight's dtype (fp32 accumulation, one rounding): a column
    # reduction written for inductor ran 5x slower; the rounding is the third term of S below
    v = (r @ w).float()
    x2 = x.float()
    y2 = y.float()
    if fused:
        # reductions, so that inductor reads x and y once and stores no fp32 copy
        xv = x2 * v
        a = (y2 * rf).sum(-1)
        c = xv.sum(-1)
        sv = (xv * xv).sum(-1).sqrt()
        ny = (y2 * y2).sum(-1).sqrt()
        nx = (x2 * x2).sum(-1).sqrt()
    else:
        a = y2 @ rf
        c = x2 @ v
        sv = torch.linalg.vector_norm(x2 * v, dim=-1)
        ny = torch.linalg.vector_norm(y2, dim=-1)
        nx = torch.linalg.vector_norm(x2, dim=-1)
    d = a - c
    if b is not None:
        d = d - (b.float() * rf).sum()
    # S_i = |y_i| + |x_i|·ω + |x_i ∘ Wᵀr|: output rounding, operand-sized errors, rounding of Wᵀr
    scale = ny + nx * omega + sv
    rel = (d.abs() / scale.clamp_min(1e-30)).amax()
    return torch.nan_to_num(rel, nan=math.inf)  # NaN / inf outputs fail the check


_compiled_rel = None


def _fused_rel():
    global _compiled_rel
    if _compiled_rel is None:
        _compiled_rel = torch.compile(_rel, dynamic=True, fullgraph=True)
    return _compiled_rel


def _verify_hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
    # one function for every Linear, all per-layer state on the module: the blocks compiled by
    # regional compile keep sharing one graph (a per-layer closure would make dynamo recompile)
    x = args[0] if args else kwargs["input"]
    # detached: dynamo keeps Parameters at static shapes (one graph per weight shape), plain
    # tensors get dynamic ones; torchao weights stay as they are (no detach in inference mode)
    w = module.weight
    w = w.detach() if type(w) is nn.Parameter else w
    b = None if module.bias is None else module.bias.detach()
    # rows as 2-D views here (outside the compiled check): fewer graph variants
    x, y = x.reshape(-1, x.shape[-1]), output.reshape(-1, output.shape[-1])
    if torch.compiler.is_compiling():
        # traced into a compiled block: record into device buffers at the device-side step
        rel = _rel(x, y, w, b, module._verify_r, module._verify_omega, module._verify_fused).reshape(1)
        module._verify_rel.scatter_reduce_(0, module._verify_step, rel, reduce="amax")
        module._verify_calls.scatter_add_(0, module._verify_step, module._verify_one)
        return
    # eager: the host knows layer and step; keep the 0-d result (no sync, no extra kernel: an
    # in-place record in a compiled function tripled its per-call CPU cost)
    fused = module._verify_fused
    rel = (_fused_rel() if fused else _rel)(x, y, w, b, module._verify_r, module._verify_omega, fused)
    state = module._verify_state
    state.pending.append(rel)
    state.pending_at.append((module._verify_index, state.slot))


def _fault_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    # device-side condition (no host read of the step): works in eager and in compiled blocks
    hit = (module._verify_step == module._verify_fault_step).reshape(())
    return torch.where(hit, -output, output)


# -- state -------------------------------------------------------------------------------------


@dataclass
class _Layer:
    name: str  # qualified: <pipeline component>.<module path>
    role: str  # denoiser / text_encoder / vae / other
    module: nn.Linear
    tol: float
    rel: torch.Tensor  # [cap] worst rel per step of the current pipeline call
    calls: torch.Tensor  # [cap] calls per step


_BUFFERS = ("_verify_r", "_verify_omega", "_verify_step", "_verify_rel", "_verify_calls", "_verify_one",
            "_verify_fault_step")


class VerifyState:
    """What apply() installed; `report` is the live summary (plain numbers and strings)."""

    def __init__(self, device: torch.device, cap: int, fused: bool, seed: int):
        self.device = device
        self.cap = cap
        self.fused = fused
        self.layers: list[_Layer] = []
        self.step = 0
        self.step_t = torch.zeros(1, dtype=torch.int64, device=device)
        self.one = torch.ones(1, dtype=torch.int32, device=device)
        self.bank = torch.empty(0, device=device)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self._handles: list[Any] = []
        self._undo: list[Any] = []
        self.fault: Fault | None = None
        self.report: dict[str, Any] = {}
        # eager calls: their 0-d results and (layer index, step slot), read once per pipeline call
        self.pending: list[torch.Tensor] = []
        self.pending_at: list[tuple[int, int]] = []

    @property
    def slot(self) -> int:
        return min(self.step, self.cap - 1)

    # per pipeline call ------------------------------------------------------------------------
    def _set_step(self, k: int) -> None:
        self.step = k
        self.step_t.fill_(self.slot)  # a kernel, no sync
        self.bank.normal_(generator=self.generator)  # fresh r for every layer

    def _on_step(self, original):
        def step(*args, **kwargs):
            out = original(*args, **kwargs)
            self._set_step(self.step + 1)
            return out

        return step

    @contextlib.contextmanager
    def call_context(self):
        """Entered around every pipeline call: resets the buffers, then reads them once."""
        torch._foreach_zero_([t for layer in self.layers for t in (layer.rel, layer.calls)])
        self.pending.clear()
        self.pending_at.clear()
        self._set_step(0)
        # the fused check sees a few shape / bias variants; allow them without hitting dynamo's
        # per-function recompile limit (restored after the call)
        limit = (torch._dynamo.config.patch(recompile_limit=max(64, torch._dynamo.config.recompile_limit))
                 if self.fused else contextlib.nullcontext())
        with limit:
            yield
        self._collect()

    def _collect(self) -> None:
        # compiled blocks wrote into the buffers, eager calls left 0-d results: one transfer
        rel = torch.stack([layer.rel for layer in self.layers])
        calls = torch.stack([layer.calls for layer in self.layers]).to(rel.dtype)
        parts = [rel.flatten(), calls.flatten()]
        if self.pending:
            parts.append(torch.stack(self.pending).to(device=rel.device, dtype=rel.dtype))
        host = torch.cat(parts).cpu().numpy()  # the one host sync of the call
        n = rel.numel()
        rel_h, calls_h = host[:n].reshape(rel.shape).copy(), host[n: 2 * n].reshape(rel.shape).copy()
        tol = np.array([layer.tol for layer in self.layers])[:, None]
        first_seen: dict[tuple[int, int], int] = {}  # eager calls: where a failing layer-step first failed
        if self.pending_at:
            at = np.array(self.pending_at)
            values = host[2 * n:]
            np.maximum.at(rel_h, (at[:, 0], at[:, 1]), values)
            np.add.at(calls_h, (at[:, 0], at[:, 1]), 1)
            for pos in np.flatnonzero(~(values <= tol[at[:, 0], 0])):
                first_seen.setdefault(tuple(at[pos]), int(pos))
        self.pending.clear()
        self.pending_at.clear()
        rep = self.report
        rep["pipeline_calls"] += 1
        rep["checks"] += int(calls_h.sum())
        ran = calls_h > 0
        rel_h = np.where(ran, rel_h, 0.0)
        finite = np.where(np.isfinite(rel_h), rel_h, np.inf)
        worst = np.unravel_index(np.argmax(finite / tol), rel_h.shape)
        if finite[worst] / tol[worst[0], 0] > rep["worst_rel_to_tol"]:
            rep["worst_rel_to_tol"] = float(min(finite[worst] / tol[worst[0], 0], 1e300))
            rep["worst_rel_error"] = _plain(rel_h[worst])
            rep["worst_layer"] = self.layers[worst[0]].name
            rep["worst_step"] = int(worst[1])
        failing = np.argwhere(ran & ~(rel_h <= tol))  # NaN counts as failing
        if len(failing) == 0:
            return
        # order: by step, then by call order where known (eager calls), else by module order
        failing = sorted(failing.tolist(), key=lambda ls: (ls[1], first_seen.get(tuple(ls), 1 << 40), ls[0]))
        found = [{"layer": self.layers[li].name, "step": si, "phase": self._phase(self.layers[li], si),
                  "rel_error": _plain(rel_h[li, si]), "tol": self.layers[li].tol,
                  "pipeline_call": rep["pipeline_calls"]} for li, si in failing]
        rep["failed_checks"] += len(found)
        rep["failures"].extend(found[: max(0, MAX_REPORTED_FAILURES - len(rep["failures"]))])
        first = found[0]
        more = f" ({len(found) - 1} more failing layer-steps in this call)" if len(found) > 1 else ""
        raise VerificationError(
            f"Freivalds check failed in {first['layer']} {first['phase']}: rel. error "
            f"{_fmt(first['rel_error'])} > tol {first['tol']:.3g}{more}"
            + (f" [fault injected at {self.fault}]" if self.fault else "")
        )

    def _phase(self, layer: _Layer, step: int) -> str:
        label = f">= {step}" if step == self.cap - 1 else str(step)
        if layer.role == "text_encoder":
            return "during text encoding (before denoising step 0)"
        if layer.role == "vae":
            return f"during VAE decode (after {label} denoising steps)"
        return f"at denoising step {label}"

    def remove(self) -> None:
        """Take every hook and buffer off again (the pipeline computes as before)."""
        for h in self._handles:
            h.remove()
        for undo in reversed(self._undo):
            undo()
        for layer in self.layers:
            for name in _BUFFERS:
                layer.module._buffers.pop(name, None)
            for name in ("_verify_fused", "_verify_state", "_verify_index"):
                layer.module.__dict__.pop(name, None)
        self._handles.clear()
        self._undo.clear()


def _plain(x) -> float | str:
    x = float(x)
    return x if math.isfinite(x) else str(x)  # result files refuse non-finite numbers


def _fmt(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) else x


def tolerance(dtype: torch.dtype, in_features: int, out_features: int, quantized: bool = False) -> float:
    """tol = K · u_eff for one Linear (see the module docstring)."""
    u_out = UNIT_ROUNDOFF.get(dtype, 2.0 ** -8)
    if dtype == torch.float32:
        u_in = FP32_MATMUL_INPUT_ROUNDOFF.get(torch.get_float32_matmul_precision(), 2.0 ** -8)
    else:
        u_in = 0.0
    if quantized:
        u_in = max(u_in, u_out)  # the kernel may dequantize the weight into the activation dtype
    return K_SIGMA * (u_out + 2 * u_in + 2.0 ** -24 * math.sqrt(max(in_features, out_features)))


def _linears(component: nn.Module) -> Iterable[tuple[str, nn.Linear]]:
    for name, m in component.named_modules():
        if isinstance(m, nn.Linear):
            yield name, m


def apply(pipe, roles: dict[str, str], steps: int, device: torch.device, *, fault: Fault | None = None,
          fused: bool | None = None, seed: int = 0) -> VerifyState:
    """Hook a Freivalds check onto every nn.Linear of the pipeline components named in `roles`
    (component attribute -> denoiser / text_encoder / vae / other). steps: denoising steps of a
    call (buffers hold steps + 2 slots; later steps share the last). fused: compile the check
    (default: on CUDA). Returns the state; put state.call_context around every pipeline call."""
    if fused is None:
        fused = device.type == "cuda"
    state = VerifyState(device, steps + 2, fused, seed)
    found: list[tuple[str, str, nn.Linear]] = []
    for comp, role in roles.items():
        module = getattr(pipe, comp, None)
        if isinstance(module, nn.Module):
            found.extend((f"{comp}.{name}", role, m) for name, m in _linears(module))
    if not found:
        raise CaseSkip("verify: the pipeline has no nn.Linear layer to check")
    for name, _, m in found:
        w = m.weight
        if type(w) not in (torch.Tensor, nn.Parameter):
            if getattr(w, "act_quant_kwargs", None) is not None or not hasattr(w, "dequantize"):
                raise CaseSkip(f"verify: {name} has a {type(w).__name__} weight with dynamic activation "
                               f"quantization (or no dequantize()); only weight-only quantization is verified")
    if fault is not None:
        targets = [name for name, _, _ in found if fault.layer in name]
        if not targets:
            raise UsageError(f"--perf-verify-fault: no verified Linear's name contains {fault.layer!r}; "
                             f"e.g. {', '.join(n for n, _, _ in found[:5])}")
        state.fault = fault

    state.bank = torch.empty(sum(m.out_features for _, _, m in found), dtype=torch.float32, device=device)
    offset = 0
    with torch.no_grad():
        for name, role, m in found:
            w = _weight(m.weight).float()
            omega = torch.linalg.vector_norm(w, dim=0).max().reshape(())
            quantized = type(m.weight) not in (torch.Tensor, nn.Parameter)
            # the output dtype: a torchao weight reports its logical (activation) dtype
            layer = _Layer(name, role, m, tolerance(m.weight.dtype, m.in_features, m.out_features, quantized),
                           torch.zeros(state.cap, dtype=torch.float32, device=device),
                           torch.zeros(state.cap, dtype=torch.int32, device=device))
            # buffers, not attributes of a Python object: compiled blocks take them as graph inputs
            bufs = {"_verify_r": state.bank[offset: offset + m.out_features], "_verify_omega": omega,
                    "_verify_step": state.step_t, "_verify_rel": layer.rel, "_verify_calls": layer.calls,
                    "_verify_one": state.one}
            offset += m.out_features
            for key, t in bufs.items():
                m.register_buffer(key, t, persistent=False)
            m._verify_fused = fused
            m._verify_state = state  # read by eager calls only (never inside compiled code)
            m._verify_index = len(state.layers)
            if fault is not None and name == targets[0]:
                m.register_buffer("_verify_fault_step",
                                  torch.full((1,), fault.step, dtype=torch.int64, device=device), persistent=False)
                # prepend: the fault corrupts the output before the check (and the model) sees it
                state._handles.append(m.register_forward_hook(_fault_hook, prepend=True))
            state._handles.append(m.register_forward_hook(_verify_hook, with_kwargs=True))
            state.layers.append(layer)
    # the step counter follows scheduler.step on the instance (measure's stage probe wraps on top)
    state._undo.append(patch_method(pipe.scheduler, "step", state._on_step))

    tols = [layer.tol for layer in state.layers]
    state.report.update({
        "checked_layers": len(state.layers),
        "layers_per_component": {c: sum(1 for layer in state.layers if layer.name.split(".", 1)[0] == c)
                                 for c in roles if hasattr(pipe, c)},
        "tol_min": min(tols), "tol_max": max(tols), "k_sigma": K_SIGMA,
        "fused": fused,
        "fault": str(fault) if fault else None,
        "pipeline_calls": 0, "checks": 0, "failed_checks": 0,
        "worst_rel_error": 0.0, "worst_rel_to_tol": 0.0, "worst_layer": None, "worst_step": None,
        "failures": [],
    })
    return state


class VerifyKnob(Knob):
    """Freivalds check of every Linear output of the pipeline."""
    name = "verify"
    # after quantization and caches: it checks the weights and the calls that really run;
    # before compile: dynamo traces the hooks into the compiled blocks and fuses the checks
    order = 80
    fields = (Field("verify", False),)
    choices = {"verify": True}

    def check(self, ctx: KnobContext) -> str | None:
        return skip_reason(check, ctx.recipe.quant, ctx.recipe.te_quant)

    def apply(self, ctx: KnobContext) -> dict[str, Any]:
        spec = ctx.spec
        roles = {spec.denoiser: "denoiser", spec.vae: "vae", **{t: "text_encoder" for t in spec.text_encoders}}
        state = apply(ctx.pipe, roles, ctx.steps, ctx.device, fault=parse_fault(ctx.options.verify_fault),
                      seed=ctx.options.seed)
        ctx.state[self.name] = state
        return {"verify": state.report}  # live: updated after every pipeline call

    def call_context(self, ctx: KnobContext):
        return ctx.state[self.name].call_context


KNOB = VerifyKnob()
