"""Metrics shared by the env, the evaluator and the agent (numpy only, so env workers stay light).

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
    if int(mask.sum()) < min_pixels:
        return None
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB between two images or videos of the same shape."""
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {pred.shape} vs {target.shape}")
    mse = float(np.mean((pred - target) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(data_range**2 / mse)


def ssim(pred: np.ndarray, target: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM (Wang et al. 2004, 7x7 uniform window) over the frames/channels of two uint8-range images."""
    from scipy.ndimage import uniform_filter

    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs {y.shape}")
    if x.ndim == 2:
        x, y = x[None, ..., None], y[None, ..., None]
    elif x.ndim == 3:
        x, y = x[None], y[None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for f in range(x.shape[0]):
        for c in range(x.shape[-1]):
            a, b = x[f, ..., c], y[f, ..., c]
            mu_a, mu_b = uniform_filter(a, 7), uniform_filter(b, 7)
            saa = uniform_filter(a * a, 7) - mu_a**2
            sbb = uniform_filter(b * b, 7) - mu_b**2
            sab = uniform_filter(a * b, 7) - mu_a * mu_b
            num = (2 * mu_a * mu_b + c1) * (2 * sab + c2)
            den = (mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2)
            vals.append(float(np.mean(num / den)))
    return float(np.mean(vals))
