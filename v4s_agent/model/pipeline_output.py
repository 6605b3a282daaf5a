"""Output dataclass of :class:`.pipeline_v4s.Video4SpatialPipeline` (diffusers' ``BaseOutput``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffusers.utils import BaseOutput

Box = tuple[float, float, float, float]


@dataclass
class V4SPipelineOutput(BaseOutput):
    r"""What one plan produced.

    Args:
        frames (`np.ndarray` uint8 of shape `(batch_size, num_target_frames, height, width, 3)`, or a tensor):
            frame 0 is the current observation (clean), then the imagined trajectory, then the auxiliary
            frames showing the goal marked with a red box. `output_type="pt"` gives float `(B, 3, T, H, W)`
            in [-1, 1]; `"latent"` gives the target latents.
        box (`list[Box | None]`): per sample, the goal box `(x0, y0, x1, y1)` in pixels read back from the
            auxiliary frames (the most confident one), or `None`.
        latents (`torch.Tensor` of shape `(batch_size, C, F_target_latent, h, w)`): the final target latents.
        box_confidence (`list[float]`): per sample, the red-box reader's confidence in `box`.
    """

    frames: Any
    box: list[Box | None] = field(default_factory=list)
    latents: Any = None
    box_confidence: list[float] = field(default_factory=list)
