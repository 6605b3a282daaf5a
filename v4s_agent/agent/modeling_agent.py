"""LeRobot-style policy facade: ``V4SPolicy`` with ``reset`` / ``select_action`` / ``predict_action_chunk`` /
``forward -> (loss, dict)``.

Why: users coming from LeRobot expect these names (``policies/<name>/modeling_<name>.py``); the policy is a
thin wrapper, the work is done by :class:`VideoPlanner` (model + decoding) and :class:`V4SAgent` (memory,
receding horizon, stop rule).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .agent import V4SAgent
from .configuration_agent import V4SAgentConfig
from .planner import VideoPlanner


class V4SPolicy:
    """Video4Spatial planner + agent under LeRobot's method names.

    Args:
        config: the agent configuration.
        planner: a loaded :class:`VideoPlanner`.
    """

    config_class = V4SAgentConfig
    name = "v4s"

    def __init__(self, config: V4SAgentConfig, planner: VideoPlanner) -> None:
        self.config = config
        self.planner = planner
        self.agent = V4SAgent(planner, config=config)
        self._episode: dict[str, Any] | None = None

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, config: V4SAgentConfig | None = None, **planner_kwargs: Any
    ) -> V4SPolicy:
        """Load the planner checkpoint (default: the shipped one)."""
        return cls(config or V4SAgentConfig(), VideoPlanner.from_pretrained(path, **planner_kwargs))

    def reset(self, info: dict[str, Any] | None = None) -> None:
        """Start an episode; ``info`` is the env's reset info (context tour + instruction)."""
        self._episode = info
        self.agent.steps = 0
        self.agent._queue.clear()

    @staticmethod
    def _image(batch: dict[str, Any]) -> np.ndarray:
        """``observation.image``: float (B, 3, H, W) in [0, 1] (LeRobot) or uint8 (B, H, W, 3) -> uint8."""
        x = batch.get("observation.image", batch.get("observation.images.rgb"))
        if x is None:
            raise KeyError("batch needs 'observation.image' (or 'observation.images.rgb')")
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if x.ndim == 4:
            if x.shape[0] != 1:
                raise ValueError(f"V4SPolicy acts on one env at a time. Got batch size {x.shape[0]}")
            x = x[0]
        if x.shape[0] == 3 and x.shape[-1] != 3:
            x = x.transpose(1, 2, 0)
        if x.dtype != np.uint8:
            x = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
        return x

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any]) -> torch.Tensor:
        """One action ``(1,)`` int64 for the current observation (re-plans every ``replan_every`` steps)."""
        rgb = self._image(batch)
        obs, info = self._sensors(batch, rgb)
        if self.agent.steps == 0:
            if self._episode is None:
                raise RuntimeError("call reset(info) with the env's reset info (context + instruction) first")
            ep = dict(self._episode)
            if info is not None:
                ep["agent_pose"] = info["agent_pose"]
            self.agent.reset(obs, ep)
        return torch.tensor([self.agent.act(obs, info)], dtype=torch.int64)

    @staticmethod
    def _sensors(batch: dict[str, Any], rgb: np.ndarray) -> tuple[Any, dict[str, Any] | None]:
        """With ``observation.depth`` (H, W) metres and ``observation.pose`` (4, 4) odometry in the batch,
        the agent drives on its depth + odometry map; with RGB only it executes the decoded actions."""
        depth, pose = batch.get("observation.depth"), batch.get("observation.pose")
        if depth is None or pose is None:
            return rgb, None
        as_np = [
            x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in (depth, pose)
        ]
        d, p = as_np[0].astype(np.float32), as_np[1].astype(np.float64)
        d = d.reshape(d.shape[-2:])
        return {"rgb": rgb, "depth": d}, {"agent_pose": p.reshape(4, 4)}

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Any]) -> torch.Tensor:
        """A fresh plan's whole action chunk ``(1, T_traj-1)``."""
        rgb = self._image(batch)
        if self._episode is None:
            raise RuntimeError("call reset(info) first")
        if self.agent.steps == 0:
            self.agent.reset(rgb, self._episode)
        plan = self.agent.replan(rgb)
        return torch.as_tensor(plan.actions, dtype=torch.int64)[None]

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on a batch of docs/INTERFACES.md (the flow-matching objective of the pipeline)."""
        from ..model.losses import flow_matching_loss

        return flow_matching_loss(self.planner.pipeline, batch)
