"""The sampler, written once: its settings, their one validity rule, the sigma schedule and the step.

Why a module of its own: the PyTorch pipeline (``pipeline_v4s.py``) and the exported runtimes (ONNX Runtime
and TensorRT, ``v4s_agent.export``) run the same sampling loop on different arrays. The maths here is
plain arithmetic on whatever arrays it is given (numpy or torch) and imports neither torch nor diffusers,
so both loops call it and a change to the sampler is made in one place.

The schedule is diffusers' ``FlowMatchEulerDiscreteScheduler`` (static shift), reproduced to the float32
bit; a pipeline's saved ``scheduler/`` component supplies its shift and stochastic switch
(:func:`scheduler_settings`), and options this module does not implement are refused, not ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

CFG_MODES = ("joint", "text_only")

# diffusers scheduler options the schedule below does not implement (refused by ``scheduler_settings``)
_UNSUPPORTED = (
    "use_dynamic_shifting",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "invert_sigmas",
    "shift_terminal",
)


def check_sampling(
    num_inference_steps: int | None = None, guidance_scale: float | None = None, cfg_mode: str | None = None
) -> None:
    """The one validity rule of the sampling settings (``None``: not given, nothing to check).

    ``guidance_scale`` >= 1: 1 samples the conditional branch alone; below 1 the guided velocity would
    lean towards the null condition, which the method never asks for.

    Raises:
        ValueError: naming the setting and the value.
    """
    if num_inference_steps is not None and int(num_inference_steps) < 1:
        raise ValueError(f"num_inference_steps must be >= 1. Got {num_inference_steps}")
    if guidance_scale is not None and not float(guidance_scale) >= 1.0:
        raise ValueError(f"guidance_scale must be >= 1. Got {guidance_scale}")
    if cfg_mode is not None and cfg_mode not in CFG_MODES:
        raise ValueError(f"cfg_mode must be one of {CFG_MODES}. Got {cfg_mode!r}")


@dataclass(frozen=True)
class SamplingConfig:
    """Everything that fixes how a plan is sampled; the defaults here are the project's only ones.

    Args:
        num_inference_steps: sampler steps.
        guidance_scale: joint classifier-free guidance scale ``w`` (1 = conditional branch only).
        cfg_mode: ``"joint"`` (null instruction + pure-noise context) or ``"text_only"`` (ablation).
        shift: the flow-matching time shift of the noise levels.
        stochastic: re-noise the clean estimate with fresh noise at every step (diffusers'
            ``stochastic_sampling``) instead of an Euler step.
        num_train_timesteps: the timestep scale (sigma 1 = timestep ``num_train_timesteps``).
    """

    num_inference_steps: int = 8
    guidance_scale: float = 2.0
    cfg_mode: str = "joint"
    shift: float = 3.0
    stochastic: bool = False
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        check_sampling(self.num_inference_steps, self.guidance_scale, self.cfg_mode)
        if self.shift <= 0 or self.num_train_timesteps < 1:
            raise ValueError(
                f"shift must be > 0 and num_train_timesteps >= 1. "
                f"Got {self.shift}, {self.num_train_timesteps}"
            )

    @classmethod
    def from_settings(cls, model_config: Any, scheduler: dict[str, Any] | None = None) -> SamplingConfig:
        """From a model config (``ModelConfig`` or its dict) and, when given, the saved scheduler's
        settings (:func:`scheduler_settings`), which win for shift and stochastic sampling."""

        def get(name: str) -> Any:
            return model_config.get(name) if isinstance(model_config, dict) else getattr(model_config, name)

        sched = scheduler or {}
        return cls(
            num_inference_steps=int(get("num_inference_steps")),
            guidance_scale=float(get("guidance_scale")),
            cfg_mode=str(get("cfg_mode")),
            shift=float(sched.get("shift", get("flow_shift"))),
            stochastic=bool(sched.get("stochastic_sampling", get("stochastic_sampling"))),
            num_train_timesteps=int(sched.get("num_train_timesteps", cls.num_train_timesteps)),
        )

    def with_overrides(
        self,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        cfg_mode: str | None = None,
    ) -> SamplingConfig:
        """A copy with the per-call settings that are given (``None`` keeps this config's)."""
        new = {
            k: v
            for k, v in (
                ("num_inference_steps", num_inference_steps),
                ("guidance_scale", guidance_scale),
                ("cfg_mode", cfg_mode),
            )
            if v is not None
        }
        return replace(self, **new) if new else self

    @property
    def uses_guidance(self) -> bool:
        """Whether a null branch is evaluated (``w > 1``)."""
        return self.guidance_scale > 1.0

    def schedule(self) -> tuple[np.ndarray, np.ndarray]:
        """``(timesteps (N,), sigmas (N+1,))`` float32, see :func:`flow_match_sigmas`."""
        return flow_match_sigmas(self.num_inference_steps, self.num_train_timesteps, self.shift)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def flow_match_sigmas(
    num_inference_steps: int, num_train_timesteps: int = 1000, shift: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(timesteps (N,), sigmas (N+1,))`` exactly as ``FlowMatchEulerDiscreteScheduler.set_timesteps``
    (static shift; the last sigma is 0)."""
    check_sampling(num_inference_steps=num_inference_steps)
    n = float(num_train_timesteps)

    def shifted(s: np.ndarray) -> np.ndarray:
        return shift * s / (1 + (shift - 1) * s)

    train_sigmas = shifted(np.linspace(1, n, int(n), dtype=np.float32)[::-1].copy() / n)
    sigma_max, sigma_min = float(train_sigmas[0]), float(train_sigmas[-1])
    timesteps = np.linspace(sigma_max * n, sigma_min * n, num_inference_steps)
    sigmas = shifted(timesteps / n).astype(np.float32)
    timesteps = (sigmas * np.float32(n)).astype(np.float32)
    return timesteps, np.concatenate([sigmas, np.zeros(1, np.float32)])


def guided_velocity(v_cond: Any, v_null: Any, guidance_scale: float) -> Any:
    """Joint classifier-free guidance: ``v_null + w (v_cond - v_null)`` (``w`` applied as float32)."""
    return v_null + float(np.float32(guidance_scale)) * (v_cond - v_null)


def sampler_step(x: Any, v: Any, sigmas: np.ndarray, i: int, noise: Any = None) -> Any:
    """One step from ``sigmas[i]`` to ``sigmas[i + 1]`` for the velocity ``v`` (numpy or torch arrays).

    ``noise is None``: the Euler step ``x + (s' - s) v``; otherwise the stochastic step, the clean estimate
    ``x - s v`` re-noised to ``s'`` with ``noise`` (drawn by the caller, so each backend keeps its own
    random stream). The sigmas enter as Python floats of their float32 values (the float32 difference for
    Euler, as the torch scheduler computes it), which numpy >= 2 and torch both apply to float32 arrays
    without promotion.
    """
    s, s_next = np.float32(sigmas[i]), np.float32(sigmas[i + 1])
    if noise is None:
        return x + float(s_next - s) * v
    return (1.0 - float(s_next)) * (x - float(s) * v) + float(s_next) * noise


def scheduler_settings(scheduler: Any) -> dict[str, Any]:
    """The settings of a saved diffusers scheduler that the sampler uses; a clear error for the ones it
    does not implement (another scheduler class, karras/dynamic shifting, ...)."""
    cfg = dict(scheduler.config)
    name = type(scheduler).__name__
    if name != "FlowMatchEulerDiscreteScheduler":
        raise NotImplementedError(f"the sampler implements FlowMatchEulerDiscreteScheduler, not {name}")
    bad = [k for k in _UNSUPPORTED if cfg.get(k)]
    if bad:
        raise NotImplementedError(f"scheduler options {bad} are not implemented by the sampler")
    return {
        "class": name,
        "num_train_timesteps": int(cfg["num_train_timesteps"]),
        "shift": float(cfg["shift"]),
        "stochastic_sampling": bool(cfg.get("stochastic_sampling", False)),
    }
