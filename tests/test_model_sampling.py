"""The sampler written once (issue 22): one config, one validity rule, one schedule and step rule that the
PyTorch pipeline and the exported runtimes both call; the agent does not change the planner it is given.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from v4s_agent.agent.configuration_agent import V4SAgentConfig
from v4s_agent.model import sampling
from v4s_agent.model.configuration_model import ModelConfig
from v4s_agent.model.sampling import SamplingConfig, flow_match_sigmas, sampler_step


@pytest.mark.parametrize(("steps", "shift"), [(1, 1.0), (4, 3.0), (8, 3.0), (25, 5.0)])
def test_schedule_is_diffusers_to_the_bit(steps: int, shift: float) -> None:
    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    timesteps, sigmas = flow_match_sigmas(steps, 1000, shift)
    np.testing.assert_array_equal(timesteps, sched.timesteps.numpy())
    np.testing.assert_array_equal(sigmas, sched.sigmas.numpy())
    assert sigmas[-1] == 0 and np.all(np.diff(sigmas) < 0)


@pytest.mark.parametrize("stochastic", [False, True])
def test_step_rule_is_diffusers_step_on_torch_and_numpy(stochastic: bool) -> None:
    """One step of ours equals diffusers' on torch tensors, and gives the same numbers on numpy arrays."""
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, stochastic_sampling=stochastic)
    sched.set_timesteps(4)
    _, sigmas = flow_match_sigmas(4, 1000, 3.0)
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 3, 4, 8, 8, generator=g), torch.randn(2, 3, 4, 8, 8, generator=g)
    for i, t in enumerate(sched.timesteps):
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(i)) if stochastic else None
        ref = sched.step(v, t, x, generator=torch.Generator().manual_seed(i), return_dict=False)[0]
        ours = sampler_step(x, v, sigmas, i, noise)
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)
        ours_np = sampler_step(x.numpy(), v.numpy(), sigmas, i, None if noise is None else noise.numpy())
        assert ours_np.dtype == np.float32
        np.testing.assert_allclose(ours_np, ref.numpy(), rtol=0, atol=1e-6)
        x = ref


def test_pipeline_and_runtimes_call_the_same_sampler() -> None:
    from v4s_agent.export import planner_runtime, runtime_ort, runtime_trt

    from v4s_agent.model import pipeline_v4s

    for mod in (pipeline_v4s, planner_runtime):
        assert mod.sampler_step is sampling.sampler_step, mod.__name__
        assert mod.guided_velocity is sampling.guided_velocity, mod.__name__
        assert mod.SamplingConfig is sampling.SamplingConfig, mod.__name__
    assert runtime_ort.PlannerRuntime is planner_runtime.PlannerRuntime  # ONNX Runtime: the loop
    assert issubclass(runtime_trt.TrtPlannerBackend, planner_runtime.PlannerRuntime)  # TensorRT: same loop


def test_one_default_per_setting() -> None:
    """The model config's sampling defaults are the sampler's; agent and planner default to the model's."""
    d, m = SamplingConfig(), ModelConfig()
    assert (m.num_inference_steps, m.guidance_scale, m.cfg_mode, m.flow_shift, m.stochastic_sampling) == (
        d.num_inference_steps,
        d.guidance_scale,
        d.cfg_mode,
        d.shift,
        d.stochastic,
    )
    assert m.sampling_config() == d
    a = V4SAgentConfig()
    assert a.guidance_scale is None and a.num_inference_steps is None  # None: the model's own


def test_overrides_keep_what_is_not_given() -> None:
    base = SamplingConfig(num_inference_steps=4, guidance_scale=1.0)
    assert base.with_overrides() is base
    new = base.with_overrides(guidance_scale=3.0)
    assert (new.num_inference_steps, new.guidance_scale, base.guidance_scale) == (4, 3.0, 1.0)
    assert not base.uses_guidance and new.uses_guidance
    saved = {"shift": 5.0, "stochastic_sampling": True}
    got = SamplingConfig.from_settings(ModelConfig(flow_shift=3.0), saved)
    assert (got.shift, got.stochastic) == (5.0, True)  # the saved scheduler wins


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"guidance_scale": 0.5}, "guidance_scale must be >= 1"),
        ({"num_inference_steps": 0}, "num_inference_steps must be >= 1"),
    ],
)
def test_one_validity_rule_everywhere(kwargs: dict, match: str) -> None:
    """Model config, sampler config, pipeline call, agent config and planner refuse the same values alike."""
    from v4s_agent.agent.planner import VideoPlanner
    from v4s_agent.model.pipeline_v4s import ModelInputError, Video4SpatialPipeline

    with pytest.raises(ValueError, match=match):
        SamplingConfig(**kwargs)
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)
    with pytest.raises(ValueError, match=match):
        V4SAgentConfig(**kwargs)
    pipe = Video4SpatialPipeline.from_config_name("tiny", seed=0)
    with pytest.raises(ModelInputError, match=match):
        pipe.sampling_config(**kwargs)
    with pytest.raises(ValueError, match=match):
        VideoPlanner(pipe, **kwargs)
    with pytest.raises(ValueError, match=match):
        VideoPlanner(pipe).with_settings(**kwargs)
    sampling.check_sampling(guidance_scale=1.0, num_inference_steps=1)  # the edge is allowed


def test_agent_does_not_change_its_planner() -> None:
    from v4s_agent.agent.agent import V4SAgent
    from v4s_agent.agent.planner import VideoPlanner
    from v4s_agent.model.pipeline_v4s import Video4SpatialPipeline

    planner = VideoPlanner(Video4SpatialPipeline.from_config_name("tiny", seed=0), crosscheck="log")
    before = {k: getattr(planner, k) for k in VideoPlanner._SETTINGS}
    agent = V4SAgent(
        planner, replan_every=3, guidance_scale=3.0, num_inference_steps=2, crosscheck="override"
    )
    assert {k: getattr(planner, k) for k in VideoPlanner._SETTINGS} == before
    own = agent.planner
    assert own is not planner and own.pipeline is planner.pipeline and own.idm is planner.idm
    assert (own.guidance_scale, own.num_inference_steps, own.crosscheck, own.crosscheck_steps) == (
        3.0,
        2,
        "override",
        3,
    )
    with pytest.raises(ValueError, match="unknown planner settings"):
        planner.with_settings(pipeline=None)
