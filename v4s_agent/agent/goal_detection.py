"""The goal as the detector sees it: its region in a probability map, its pixels in the world, its box,
and the category an instruction names.
"""

from __future__ import annotations

import math

import numpy as np

from ..envs.geometry import intrinsics


def goal_component(
    prob: np.ndarray, threshold: float = 0.3, min_fraction: float = 0.006
) -> np.ndarray | None:
    """The 8-connected region of ``prob > threshold`` with the largest probability mass (bool mask).

    Why not the box of every pixel above threshold (the evaluation's reading): a few scattered false
    pixels stretch that box over the whole frame, so the goal's estimated position jumped by metres from
    one frame to the next and the old baseline turned left and right forever (issue 21).
    """
    from scipy.ndimage import label

    m = prob > threshold
    if m.mean() < min_fraction:
        return None
    lab, n = label(m, structure=np.ones((3, 3), bool))
    if n == 0:
        return None
    mass = np.bincount(lab.ravel(), weights=prob.ravel(), minlength=n + 1)
    mass[0] = 0.0
    best = int(np.argmax(mass))
    comp = lab == best
    return comp if comp.mean() >= min_fraction else None


def backproject(
    depth: np.ndarray, T_wc: np.ndarray, mask: np.ndarray, hfov_deg: float = 90.0, max_range: float = 5.0
) -> np.ndarray:
    """World points ``(N, 3)`` of the depth pixels under ``mask`` (any resolution; resized to depth's)."""
    h, w = depth.shape
    if mask.shape != (h, w):
        ry = (np.arange(h) * mask.shape[0]) // h
        rx = (np.arange(w) * mask.shape[1]) // w
        mask = mask[ry[:, None], rx[None, :]]
    vs, us = np.nonzero(mask & (depth > 0) & (depth < max_range))
    if len(vs) == 0:
        return np.zeros((0, 3))
    d = depth[vs, us].astype(np.float64)
    K = intrinsics(h, w, hfov_deg)
    pc = np.stack([(us + 0.5 - K[0, 2]) / K[0, 0] * d, -(vs + 0.5 - K[1, 2]) / K[1, 1] * d, -d])
    return (T_wc[:3, :3] @ pc + T_wc[:3, 3:4]).T


def box_of(mask: np.ndarray, h: int, w: int) -> tuple[float, float, float, float]:
    """Pixel box ``(x0, y0, x1, y1)`` in an ``h`` x ``w`` frame of a mask at any resolution."""
    ys, xs = np.nonzero(mask)
    sy, sx = h / mask.shape[0], w / mask.shape[1]
    return (xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy)


def centre_offset(box: tuple[float, float, float, float], h: int, w: int) -> float:
    """Distance of ``box``'s centre from the frame centre over half the frame diagonal (the SD)."""
    cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
    return math.hypot(cx - 0.5 * w, cy - 0.5 * h) / (0.5 * math.hypot(h, w))


def category_from_instruction(instruction: str, categories: list[str]) -> str | None:
    """The longest known category named in the instruction (``potted_plant`` matches "potted plant")."""
    text = " " + instruction.lower().replace("-", " ") + " "
    hits = [c for c in categories if f" {c.replace('_', ' ')}" in text]
    return max(hits, key=len) if hits else None
