"""The goal-in-view metrics of the task: the goal's box and its SD (numpy only, so env workers stay light).

They define the env's success rule, so they live with the env; the agent and the evaluation import them
from here (``v4s_agent.envs.goal_metrics``), which keeps every import pointing down the data flow.
SD follows the Video4Spatial paper: the distance of the goal's box centre from the frame centre. We
normalise it by the frame's half-diagonal, so SD = 0 is centred and SD = 1 is a corner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Box = tuple[float, float, float, float]


def sd_from_box(box: Sequence[float] | None, height: int, width: int) -> float:
    """Normalised centre distance of ``box`` = (x0, y0, x1, y1) in pixels; ``nan`` when there is no box."""
    if box is None:
        return float("nan")
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    return math.hypot(cx - 0.5 * width, cy - 0.5 * height) / (0.5 * math.hypot(height, width))


def box_from_mask(mask: np.ndarray, min_pixels: int = 1) -> Box | None:
    """Tight pixel box (x0, y0, x1, y1) of a boolean mask, exclusive max; ``None`` if too few pixels."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    if np.count_nonzero(mask) < min_pixels:
        return None
    # from the row/column projections: the same box, without listing every pixel (the env's goal checks
    # call this for hundreds of views per scene)
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
