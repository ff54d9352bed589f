"""The host-timesteps knob: the scheduler's step reads host copies of the schedule (tiny models, CPU)."""
import numpy as np
import pytest
import torch

from diffperf.build import build_case, check_recipe
from diffperf.cases import Case, cases_for_tier
from diffperf.knobs.host_timesteps import HostSchedule
from diffperf.knobs.skip import CaseSkip
from diffperf.measure import generate
from diffperf.models import get_model
from diffperf.options import PerfOptions
from diffperf.recipes import parse_recipe
from diffperf.tiers import get_tier


def _tiny(model, recipe):
    return build_case(Case(model, parse_recipe(recipe), "standard"), get_tier("cpu"), PerfOptions())


@pytest.mark.parametrize("model", ["sd21-base", "kandinsky3"])
def test_the_step_gets_host_copies_and_the_image_is_unchanged(model):
    eager = generate(_tiny(model, "fp32"), "a red cube", 0)
    b = _tiny(model, "fp32+host-timesteps")
    scheduler = b.pipe.scheduler
    for _ in range(2):
        image = generate(b, "a red cube", 0)
        np.testing.assert_array_equal(image, eager)
    state = b.knobs["host_timesteps"]
    steps = len(scheduler.timesteps)
    assert state["scheduler"] == type(scheduler).__name__
    assert state["steps_substituted"] == 2 * steps and state["calls_checked"] == 2


def test_the_substituted_timesteps_are_host_tensors_of_the_schedule_not_the_pipeline_s():
    class Scheduler:
        def __init__(self):
            self.got, self.looked_up = [], []

        def set_timesteps(self, num_inference_steps, device=None):
            self.timesteps = torch.arange(num_inference_steps, 0, -1, device=device) * 100

        def step(self, model_output, timestep, sample, return_dict=True):
            self.got.append(timestep)
            self.looked_up.append(self.timesteps.device.type)  # DDPM finds the next timestep in its schedule
            return sample

    s = Scheduler()
    schedule = HostSchedule(s)
    s.set_timesteps(3, device="meta")  # stands in for the GPU: the pipeline's schedule stays there
    assert s.timesteps.device.type == "meta"
    passed = list(torch.arange(3, 0, -1) * 100)  # what the loop hands the step (on the host here)
    for t in passed:
        s.step(None, t, None)
    assert [t.device.type for t in s.got] == ["cpu"] * 3 and [int(t) for t in s.got] == [300, 200, 100]
    assert all(g is not p for g, p in zip(s.got, passed))
    assert s.looked_up == ["cpu"] * 3 and s.timesteps.device.type == "meta"  # the host schedule while stepping only
    schedule.check()
    assert schedule.state == {"scheduler": "Scheduler", "steps_substituted": 3, "calls_checked": 1}


def test_a_pipeline_that_does_not_step_through_its_schedule_in_order_is_an_error():
    class Scheduler:
        def set_timesteps(self, num_inference_steps, device=None):
            self.timesteps = torch.tensor([30, 20, 10][:num_inference_steps], device=device)

        def step(self, model_output, timestep, sample):
            return sample

    s = Scheduler()
    schedule = HostSchedule(s)
    s.set_timesteps(3)
    for t in (30, 10, 20):  # out of order
        s.step(None, torch.tensor(t), None)
    with pytest.raises(RuntimeError, match=r"passed Scheduler.step the timesteps \[30.0, 10.0, 20.0\] but .* "
                                           r"\[30.0, 20.0, 10.0\]"):
        schedule.check()
    s.set_timesteps(2)
    s.step(None, torch.tensor(30), None)
    s.step(None, torch.tensor(20), None)
    with pytest.raises(RuntimeError, match="called 3 times for a schedule of 2 timesteps"):
        s.step(None, torch.tensor(10), None)


def test_models_whose_step_reads_nothing_skip_and_the_cases_list_the_others():
    with pytest.raises(CaseSkip, match="flux-dev's scheduler does not read the timestep on the host"):
        check_recipe(parse_recipe("bf16+host-timesteps"), get_model("flux-dev"), torch.device("cuda"))
    listed = {c.id for c in cases_for_tier(get_tier("h200")) if c.recipe.host_timesteps}
    assert listed == {f"{m}/{r}" for m in ("sd21-base", "kandinsky3")
                      for r in ("bf16+cudagraphs+host-timesteps", "bf16+compile-full+reduce-overhead+host-timesteps")} | {
        f"kandinsky3/{r}+async-noise" for r in ("bf16+cudagraphs+host-timesteps",
                                                "bf16+compile-full+reduce-overhead+host-timesteps")}



# -- async-noise: the scheduler's per-step noise copied to the GPU without blocking ---------------------

def _ddpm_module():
    from diffusers import DDPMScheduler
    import importlib

    return DDPMScheduler, importlib.import_module(DDPMScheduler.__module__)


def test_async_noise_copies_the_generator_s_values_without_blocking_and_only_while_stepping():
    from diffperf.knobs.async_noise import PinnedNoise

    DDPMScheduler, module = _ddpm_module()
    original, pinned, seen = module.randn_tensor, [], {}

    def pin(t):  # stands in for Tensor.pin_memory on a machine without a GPU
        pinned.append(t)
        return t.clone()

    s = DDPMScheduler(num_train_timesteps=1000)

    def step(model_output, timestep, sample, generator=None):  # draws as DDPM's step does; 'meta' stands in for the GPU
        seen["draw"] = module.randn_tensor
        return module.randn_tensor((1, 4, 8, 8), generator=generator, device=torch.device("meta"), dtype=torch.float32)
    s.step = step
    noise = PinnedNoise(s, pin=pin)
    g = torch.Generator().manual_seed(7)
    out = s.step(None, 999, None, generator=g)
    want_g = torch.Generator().manual_seed(7)
    want = torch.randn(1, 4, 8, 8, generator=want_g)
    assert out.device.type == "meta" and seen["draw"] is not original and module.randn_tensor is original
    assert noise.state == {"scheduler": "DDPMScheduler", "async_draws": 1}
    assert torch.equal(pinned[0], want) and torch.equal(g.get_state(), want_g.get_state())  # same values, same stream


def test_async_noise_leaves_host_draws_to_diffusers_and_the_image_unchanged():
    from diffperf.knobs.async_noise import PinnedNoise

    eager = generate(_tiny("kandinsky3", "fp32"), "a red cube", 0)
    b = _tiny("kandinsky3", "fp32+host-timesteps")
    noise = PinnedNoise(b.pipe.scheduler, pin=lambda t: pytest.fail("a draw for the CPU was pinned"))
    np.testing.assert_array_equal(generate(b, "a red cube", 0), eager)
    assert noise.state["async_draws"] == 0  # the CPU needs no copy: diffusers' own draw


def test_async_noise_skips_where_nothing_is_drawn_or_no_gpu():
    with pytest.raises(CaseSkip, match="sd21-base's scheduler draws no noise in its step"):
        check_recipe(parse_recipe("bf16+async-noise"), get_model("sd21-base"), torch.device("cuda"))
    with pytest.raises(CaseSkip, match="async-noise: .* needs a CUDA device"):
        check_recipe(parse_recipe("fp32+async-noise"), get_model("kandinsky3"), torch.device("cpu"))
