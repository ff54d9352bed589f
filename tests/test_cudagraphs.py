"""The cudagraphs knob: signature keys, static input buffers and output clones, checked on the CPU
with a stand-in graph backend that, like a CUDA graph, replays by recomputing into the outputs it
wrote at capture from whatever its static inputs hold."""
import numpy as np
import pytest
import torch
import torch.utils._pytree as pytree

from diffperf.build import build_case, check_recipe
from diffperf.cases import Case
from diffperf.knobs import cudagraphs
from diffperf.knobs.skip import CaseSkip
from diffperf.measure import generate
from diffperf.models import get_model
from diffperf.options import PerfOptions
from diffperf.recipes import parse_recipe
from diffperf.tiers import get_tier

CPU = torch.device("cpu")


class ReplayingBackend:
    """Like a CUDA graph: capturing runs nothing (the static outputs it hands back hold garbage,
    here NaN, until a replay); a replay calls fn and writes the result into those outputs, so it
    sees only what was copied into the static inputs."""

    def __init__(self):
        self.captures = 0
        self.replays = 0

    def capture(self, fn):
        self.captures += 1
        outputs = pytree.tree_map_only(torch.Tensor, lambda t: torch.full_like(t, float("nan")), fn())

        def replay():
            self.replays += 1
            fresh = fn()
            for static, new in zip(pytree.tree_leaves(outputs), pytree.tree_leaves(fresh)):
                static.copy_(new)

        return replay, outputs

    def held_bytes(self):
        return 1000 * self.captures


def affine(x, *, scale, bias=None, mode="plain"):
    y = x * scale
    if bias is not None:
        y = y + bias
    return (y, {"mode_was_" + mode: y.sum()})


def graphed(fn=affine, **kw):
    backend = ReplayingBackend()
    return cudagraphs.GraphedForward(fn, backend, CPU, **kw), backend


def test_replays_read_the_new_inputs_and_match_direct_calls():
    g, backend = graphed()
    for i in range(4):
        x, s, b = torch.randn(2, 3), torch.tensor(float(i)), torch.randn(3)
        out = g(x, scale=s, bias=b)
        want = affine(x, scale=s, bias=b)
        assert torch.equal(out[0], want[0]) and torch.equal(out[1]["mode_was_plain"], want[1]["mode_was_plain"])
    assert (backend.captures, backend.replays) == (1, 4)  # the capturing call replays too
    assert g.state["replays"] == 4
    assert g.state["captured_signatures"] == [[[[2, 3], "float32"], [[], "float32"], [[3], "float32"]]]


def test_one_graph_per_signature():
    g, backend = graphed()
    s = torch.tensor(2.0)
    g(torch.ones(2, 3), scale=s)
    g(torch.ones(4, 3), scale=s)  # CFG batch: another shape
    g(torch.ones(2, 3), scale=s, bias=torch.ones(3))  # another tree structure
    g(torch.ones(2, 3), scale=s, mode="other")  # another non-tensor value
    g(torch.ones(2, 3).to(torch.float64), scale=s)  # another dtype
    g(torch.ones(3, 2).t(), scale=s)  # same shape, another stride
    assert backend.captures == len(g.graphs) == 6 and backend.replays == 6
    g(torch.zeros(4, 3), scale=s)
    assert backend.captures == 6 and backend.replays == 7
    assert g.state["pool_held_bytes"] == 6000


def test_outputs_are_clones_a_later_replay_does_not_change():
    g, _ = graphed()
    first = g(torch.ones(2, 3), scale=torch.tensor(1.0))
    keep = first[0].clone()
    second = g(torch.ones(2, 3), scale=torch.tensor(5.0))
    assert torch.equal(first[0], keep) and torch.equal(second[0], keep * 5)
    assert first[0].data_ptr() != g.graphs[next(iter(g.graphs))].outputs[0].data_ptr()


def test_a_signature_that_changes_every_call_is_refused():
    g, _ = graphed(max_graphs=3)
    for i in range(3):
        g(torch.ones(2, 3), scale=torch.tensor(1.0), mode=f"step{i}")
    with pytest.raises(RuntimeError, match="an input changes every call"):
        g(torch.ones(2, 3), scale=torch.tensor(1.0), mode="step3")


def test_an_input_on_another_device_or_unhashable_is_refused():
    g, _ = graphed()
    with pytest.raises(RuntimeError, match="is on meta"):
        g(torch.ones(2, 3, device="meta"), scale=torch.tensor(1.0))
    with pytest.raises(RuntimeError, match="neither a tensor nor a hashable"):
        g(torch.ones(2, 3), scale=torch.tensor(1.0), mode=object.__new__(type("Unhashable", (), {"__hash__": None})))


def _tiny(model, recipe="fp32"):
    return build_case(Case(model, parse_recipe(recipe), "standard"), get_tier("cpu"), PerfOptions())


@pytest.mark.parametrize("model", ["pixart-sigma", "flux-dev"])
def test_a_graphed_denoiser_gives_the_eager_image(model):
    b = _tiny(model)
    eager = generate(b, "a red cube", 0)
    backend = ReplayingBackend()
    state = cudagraphs.apply(b.denoiser, CPU, backend)
    image = generate(b, "a red cube", 0)
    again = generate(b, "a red cube", 0)
    np.testing.assert_array_equal(image, eager)
    np.testing.assert_array_equal(again, eager)
    steps = b.spec.tiny.steps
    assert backend.captures == len(state["captured_signatures"]) == 1  # one prompt: one signature
    assert backend.replays == state["replays"] == 2 * steps


def test_a_return_dict_output_comes_back_as_its_dataclass():
    b = _tiny("sd3-medium")
    backend = ReplayingBackend()
    cudagraphs.apply(b.denoiser, CPU, backend)
    kw = dict(hidden_states=torch.randn(1, b.denoiser.config.in_channels, 8, 8), encoder_hidden_states=torch.randn(1, 7, b.denoiser.config.joint_attention_dim),
              pooled_projections=torch.randn(1, b.denoiser.config.pooled_projection_dim), timestep=torch.tensor([500.0]))
    first, second = b.denoiser(**kw), b.denoiser(**kw)
    assert type(first).__name__ == "Transformer2DModelOutput" and torch.equal(first.sample, second.sample)
    assert first.sample.data_ptr() != second.sample.data_ptr() and backend.replays == 2


def test_cudagraphs_skip_on_the_cpu_with_the_reason():
    for recipe, what in (("bf16+cudagraphs", "cudagraphs"),
                         ("bf16+compile-full+reduce-overhead", "compile mode 'reduce-overhead'")):
        with pytest.raises(CaseSkip, match=f"{what}: CUDA graphs need a CUDA device"):
            _tiny("flux-dev", recipe)


@pytest.mark.parametrize("recipe, reason", [
    ("bf16+fbcache-0.2+cudagraphs", "step cache 'fbcache' decides on the host"),
    ("bf16+teacache-0.4+cudagraphs", "step cache 'teacache'"),
    ("bf16+magcache+compile-full+reduce-overhead", "reduce-overhead': the step cache 'magcache'"),
    ("bf16+taylorseer+cudagraphs", "step cache 'taylorseer'"),
    ("bf16+verify+cudagraphs", "verify reads"),
    ("bf16+cp-ulysses-2+cudagraphs", "context parallelism"),
])
def test_what_cannot_be_captured_skips_with_the_reason(recipe, reason, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # cp-ulysses-2 would first ask for 2 GPUs
    with pytest.raises(CaseSkip, match=reason):
        check_recipe(parse_recipe(recipe), get_model("flux-dev"), torch.device("cuda"))


class CaptureMarkingBackend(ReplayingBackend):
    """A ReplayingBackend that says when it is capturing (its replays call the forward too)."""

    capturing = False

    def capture(self, fn):
        self.capturing = True
        try:
            return super().capture(fn)
        finally:
            self.capturing = False


def test_a_forward_that_reads_values_on_the_host_gets_a_host_copy_and_a_graph_per_value():
    """Lumina2's rotary embedder reads the caption lengths on the host (ModelSpec.host_read): while
    a graph is captured it gets the pipeline's mask as a host copy, never the graph's static device
    buffer; the graphs are keyed by the lengths; one copy per mask tensor, not per step."""
    b = _tiny("lumina2")
    prompts = ("a red cube", "a much longer prompt about a red cube standing on a wooden table in the sun")
    eager = [generate(b, p, 0) for p in prompts]
    rope = b.denoiser.rope_embedder
    inner, seen = rope.forward, []
    backend = CaptureMarkingBackend()

    def spy(hidden_states, attention_mask):
        seen.append((attention_mask, backend.capturing))
        return inner(hidden_states, attention_mask)

    rope.forward = spy  # under the wrapper the knob puts around it
    state = cudagraphs.apply(b.denoiser, CPU, backend, host_read=b.spec.host_read)
    for prompt, want in zip(prompts, eager):
        np.testing.assert_array_equal(generate(b, prompt, 0), want)
    graphed = b.denoiser.forward
    static = [x for g in graphed.graphs.values() for x in g.inputs if x is not None]
    at_capture = [mask for mask, capturing in seen if capturing]
    assert len(at_capture) == backend.captures == len(graphed.graphs) == 3  # cond x 2 prompts, one uncond
    assert not any(mask is buffer for mask in at_capture for buffer in static)
    lengths = [sig[-1] for sig in state["captured_signatures"]]
    assert len(set(lengths)) == 3 and all(text.startswith("(") for text in lengths)
    # two generations, each a cond and an uncond mask: four host copies for ten denoiser calls
    assert state["host_copies"] == 4 and state["replays"] == 10


def test_a_host_read_input_must_come_as_a_keyword():
    b = _tiny("lumina2")
    cudagraphs.apply(b.denoiser, CPU, ReplayingBackend(), host_read=b.spec.host_read)
    with pytest.raises(RuntimeError, match="reads 'encoder_attention_mask' on the host and must get it as a keyword"):
        b.denoiser(torch.zeros(1, 16, 16, 16), torch.zeros(1), torch.zeros(1, 8, 32), torch.ones(1, 8, dtype=torch.long))


@pytest.mark.parametrize("recipe", ["bf16+compile-full", "bf16+compile-full+reduce-overhead"])
def test_a_full_graph_compile_of_a_forward_that_reads_on_the_host_skips_with_the_reason(recipe):
    with pytest.raises(CaseSkip, match=r"compile-full: lumina2's denoiser reads 'encoder_attention_mask' on the host"):
        check_recipe(parse_recipe(recipe), get_model("lumina2"), torch.device("cuda"))
    check_recipe(parse_recipe("bf16+compile"), get_model("lumina2"), torch.device("cuda"))  # regional: its blocks


def test_a_graph_over_another_knobs_wrapper_keeps_its_own_state():
    """cudagraphs over a forward that is itself a wrapper object with a `state` (the aoti knob's):
    the graph's state stays its own (update_wrapper copied the inner __dict__ over it: KeyError
    'captured_signatures' at the first capture of FLUX.1-dev's aoti+cudagraphs rung, H100 2026-12-06)."""
    class Inner:
        def __init__(self):
            self.state = {"packages": []}

        def __call__(self, x):
            return x * 2

    module = torch.nn.Module()
    module.forward = Inner()
    state = cudagraphs.apply(module, CPU, backend=ReplayingBackend())
    out = module.forward(torch.ones(3))
    assert torch.equal(out, torch.full((3,), 2.0))
    assert state["captured_signatures"] == [[[[3], "float32"]]] and state["replays"] == 1
    assert module.forward.fn.state == {"packages": []}
