"""video4spatial: a Video4Spatial context-guided video diffusion model as an embodied agent's planner.

Importing this package registers the Gymnasium environments (``V4SNav-v0``). Heavy modules (torch,
diffusers) load lazily on first attribute access so that ``import v4s_agent`` stays cheap in env workers.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

import gymnasium

from .agent.runtimes import register_runtime_loader

__version__ = "0.1.0"

ENV_ID = "V4SNav-v0"
MAX_EPISODE_STEPS = 500

if ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=ENV_ID,
        entry_point="v4s_agent.envs.nav_env:V4SNavEnv",
        # gym.make_vec(ENV_ID, num_envs=N): AsyncVectorEnv with forkserver workers (any EGL driver)
        vector_entry_point="v4s_agent.envs.vector:make_vector_env",
        max_episode_steps=MAX_EPISODE_STEPS,
    )


def _load_runtime(pipe_dir: Any, backend: str, device: str) -> Any:
    """The exported backends' loader, handed to the planner: the export floor sits above the agent's, so
    the agent never imports it; this package root, above every floor, wires the two together."""
    from .export import load_runtime_pipeline

    return load_runtime_pipeline(pipe_dir, backend=backend, device=device)


for _backend in ("onnxruntime", "tensorrt"):
    register_runtime_loader(_backend, _load_runtime)

# public name -> module that defines it (imported on first use)
_LAZY = {
    "Video4SpatialPipeline": "v4s_agent.model.pipeline_v4s",
    "V4SPipelineOutput": "v4s_agent.model.pipeline_output",
    "V4STransformer3DModel": "v4s_agent.model.transformer_v4s",
    "VideoPlanner": "v4s_agent.agent.planner",
    "Plan": "v4s_agent.agent.planner",
    "V4SAgent": "v4s_agent.agent.agent",
    "InverseDynamicsModel": "v4s_agent.agent.inverse_dynamics",
}

# Modules that moved into model/, agent/ and evaluation/ (issue 9) or were renamed by job (issue 22), by
# their old names. Checkpoints saved before the move name their classes by module (``model_index.json``:
# "v4s_agent.transformer_v4s"), and users may have imported them; both keep working through this alias,
# which hands out the new module.
_MOVED = {
    "v4s_agent.configs": "v4s_agent.model.configuration_model",
    "v4s_agent.transformer_v4s": "v4s_agent.model.transformer_v4s",
    "v4s_agent.pipeline_v4s": "v4s_agent.model.pipeline_v4s",
    "v4s_agent.pipeline_output": "v4s_agent.model.pipeline_output",
    "v4s_agent.losses": "v4s_agent.model.losses",
    "v4s_agent.text_encoder": "v4s_agent.model.text_encoder",
    "v4s_agent.bbox": "v4s_agent.model.bbox",
    "v4s_agent.planner": "v4s_agent.agent.planner",
    "v4s_agent.configuration_v4s": "v4s_agent.agent.configuration_agent",
    "v4s_agent.modeling_v4s": "v4s_agent.agent.modeling_agent",
    "v4s_agent.inverse_dynamics": "v4s_agent.agent.inverse_dynamics",
    "v4s_agent.action_decoding": "v4s_agent.agent.action_decoding",
    "v4s_agent.evaluator_detector": "v4s_agent.evaluation.evaluator_detector",
    "v4s_agent.metrics": "v4s_agent.evaluation.metrics",
    # renamed by job (issue 22)
    "v4s_agent.envs.goals": "v4s_agent.envs.goal_viewpoints",
}


class _MovedModuleAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolve an old module name to the moved module itself (same object, its own ``__spec__`` kept)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        module = importlib.import_module(_MOVED[spec.name])
        self._spec = module.__spec__  # importlib overwrites __spec__ with the alias's; put it back below
        return module

    def exec_module(self, module: Any) -> None:
        module.__spec__ = self._spec


if not any(isinstance(f, _MovedModuleAlias) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleAlias())

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
    from .agent.agent import V4SAgent
    from .agent.inverse_dynamics import InverseDynamicsModel
    from .agent.planner import Plan, VideoPlanner
    from .model.pipeline_output import V4SPipelineOutput
    from .model.pipeline_v4s import Video4SpatialPipeline
    from .model.transformer_v4s import V4STransformer3DModel


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'v4s_agent' has no attribute {name!r}")
