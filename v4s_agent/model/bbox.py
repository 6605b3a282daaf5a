"""The auxiliary red bounding box: draw it into training targets, read it back from generated pixels.

Why pixel space: the paper marks the goal by drawing a red box into extra target frames, so the video
model learns to *draw* where the goal is; at inference the box is recovered by a colour threshold and the
largest connected component, which tolerates the blur and colour drift of generated frames.
"""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[float, float, float, float]
RED = (255, 0, 0)


def box_thickness(height: int, width: int) -> int:
    """Line width of the drawn box: 1 px up to 48 px frames, then ~1/32 of the short side."""
    return max(1, int(round(min(height, width) / 32)))


def draw_red_box(frame: np.ndarray, box: Box | None, thickness: int | None = None) -> np.ndarray:
    """A copy of uint8 ``(H, W, 3)`` ``frame`` with a pure red rectangle outline around ``box``.

    ``box`` is pixel ``(x0, y0, x1, y1)`` (inclusive corners, clipped to the frame); ``None`` returns an
    unchanged copy (goal not visible).
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be uint8 (H, W, 3). Got {frame.dtype} {frame.shape}")
    out = np.ascontiguousarray(frame.copy())
    if box is None:
        return out
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (np.isfinite([x0, y0, x1, y1]).all() and x1 >= x0 and y1 >= y0):
        raise ValueError(f"box must be finite (x0, y0, x1, y1) with x1 >= x0, y1 >= y0. Got {box}")
    p0 = (int(np.clip(round(x0), 0, w - 1)), int(np.clip(round(y0), 0, h - 1)))
    p1 = (int(np.clip(round(x1), 0, w - 1)), int(np.clip(round(y1), 0, h - 1)))
    t = thickness or box_thickness(h, w)
    # cv2 centres thick lines on the corners; draw t nested 1-px rectangles inwards instead (exact extent)
    for i in range(t):
        a = (min(p0[0] + i, p1[0]), min(p0[1] + i, p1[1]))
        b = (max(p1[0] - i, a[0]), max(p1[1] - i, a[1]))
        cv2.rectangle(out, a, b, RED, thickness=1)
    return out


def red_mask(frame: np.ndarray) -> np.ndarray:
    """Boolean ``(H, W)``: strongly red pixels (red well above green and blue), robust to blur/tint."""
    f = np.asarray(frame).astype(np.int16)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    return (r >= 120) & (r - np.maximum(g, b) >= 70)


def read_red_box(frame: np.ndarray, min_pixels: int = 4) -> tuple[Box | None, float]:
    """Read the red box back: ``((x0, y0, x1, y1), confidence)`` or ``(None, 0.0)``.

    The largest 8-connected red component gives the box; the confidence is the fraction of the box's
    outline band that is red times the fraction of its interior that is *not* (an outline, not a red blob).
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3). Got {frame.shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8. Got {frame.dtype}")
    mask = red_mask(frame)
    if mask.sum() < min_pixels:
        return None, 0.0
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None, 0.0
    idx = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh, area = (int(v) for v in stats[idx])
    if area < min_pixels:
        return None, 0.0
    comp = labels[y : y + bh, x : x + bw] == idx
    t = box_thickness(*frame.shape[:2])
    band = np.zeros_like(comp)
    band[:t], band[-t:], band[:, :t], band[:, -t:] = True, True, True, True
    band_frac = float(comp[band].mean())
    interior = ~band
    interior_frac = float(comp[interior].mean()) if interior.any() else 0.0
    conf = band_frac * (1.0 - interior_frac)
    return (float(x), float(y), float(x + bw - 1), float(y + bh - 1)), float(np.clip(conf, 0.0, 1.0))


def read_plan_boxes(frames: np.ndarray, first_box_frame: int) -> tuple[list[Box | None], list[float]]:
    """The goal box of each generated video ``frames`` (uint8 ``(B, T, H, W, 3)``): the most confident red
    box among its auxiliary frames ``first_box_frame..T-1``, and that confidence (0 when none)."""
    boxes: list[Box | None] = []
    confs: list[float] = []
    for video in frames:
        best: tuple[Box | None, float] = (None, 0.0)
        for f in range(first_box_frame, video.shape[0]):
            box, conf = read_red_box(video[f])
            if box is not None and conf > best[1]:
                best = (box, conf)
        boxes.append(best[0])
        confs.append(float(best[1]))
    return boxes, confs
