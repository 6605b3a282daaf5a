"""video4spatial: a Video4Spatial context-guided video diffusion model as an embodied agent's planner.

Importing this package registers the Gymnasium environments (``V4SNav-v0``). Heavy modules (torch,
diffusers) load lazily on first attribute access so that ``import v4s_agent`` stays cheap in env workers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import gymnasium

__version__ = "0.1.0"

ENV_ID = "V4SNav-v0"
MAX_EPISODE_STEPS = 500

if ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=ENV_ID,
        entry_point="v4s_agent.envs.nav_env:V4SNavEnv",
        max_episode_steps=MAX_EPISODE_STEPS,
    )

# public name -> module that defines it (imported on first use)
_LAZY = {
    "Video4SpatialPipeline": "v4s_agent.pipeline_v4s",
    "V4SPipelineOutput": "v4s_agent.pipeline_output",
    "V4STransformer3DModel": "v4s_agent.transformer_v4s",
    "VideoPlanner": "v4s_agent.planner",
    "Plan": "v4s_agent.planner",
    "V4SAgent": "v4s_agent.agent",
    "InverseDynamicsModel": "v4s_agent.inverse_dynamics",
}

__all__ = [
    "ENV_ID",
    "InverseDynamicsModel",
    "Plan",
    "V4SAgent",
    "V4SPipelineOutput",
    "V4STransformer3DModel",
    "VideoPlanner",
    "Video4SpatialPipeline",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover
    from .agent import V4SAgent
    from .inverse_dynamics import InverseDynamicsModel
    from .pipeline_output import V4SPipelineOutput
    from .pipeline_v4s import Video4SpatialPipeline
    from .planner import Plan, VideoPlanner
    from .transformer_v4s import V4STransformer3DModel


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'v4s_agent' has no attribute {name!r}")
