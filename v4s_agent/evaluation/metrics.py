"""Image metrics of the evaluation (PSNR, SSIM), beside the task's SD metric re-exported from the env.

SD and the goal box are defined with the task in :mod:`v4s_agent.envs.goal_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..envs.goal_metrics import Box, box_from_mask, sd_from_box

__all__ = ["Box", "box_from_mask", "mean_interval", "psnr", "sd_from_box", "ssim", "wilson_interval"]


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


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a rate (sane at 0/n and n/n, unlike the normal approximation)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """95 % normal interval of a mean (``mean ± z·sd/√n``); ``nan`` values are dropped."""
    a = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if len(a) < 2:
        return (float("nan"), float("nan"))
    half = z * float(a.std(ddof=1)) / math.sqrt(len(a))
    return (float(a.mean()) - half, float(a.mean()) + half)
