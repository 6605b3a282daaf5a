"""Imagined video -> discrete actions: the inverse-dynamics model, and an OpenCV geometric cross-check.

Why two decoders: the learned IDM (UniPi-style) is the primary decoder, but it has only ever seen real
renders; generated frames can be off its distribution. Classic two-view geometry (KLT tracks, a RANSAC
homography for the rotation, an essential matrix for the translation sign) needs no training, so where
both are confident and disagree we learn something about the plan (and can log or override).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

# Habitat order; identical to v4s_agent.envs.actions (a test checks), kept here so decoding needs no env
STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT = 0, 1, 2, 3
TURN_DEG = 15.0  # Habitat's turn angle; half of it is the left/right/straight decision threshold


@dataclass
class CVMotion:
    """Relative camera motion between two frames, from two-view geometry.

    Attributes:
        yaw_deg: heading change, positive = turned left (counter-clockwise seen from above).
        expansion: median ratio of distances to the image centre (``> 1``: moved forward).
        forward: sign of the essential-matrix translation along the optical axis (+1 forward, -1 back,
            0 unknown / pure rotation).
        inliers: RANSAC inliers of the homography (0 when tracking failed).
        action: the Habitat action this motion corresponds to, or ``None`` when not confident.
    """

    yaw_deg: float
    expansion: float
    forward: int
    inliers: int
    action: int | None


def intrinsics(height: int, width: int, hfov_deg: float = 90.0) -> np.ndarray:
    """Pinhole matrix of the env camera (square pixels, principal point at the centre)."""
    f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    g = cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    return g


def estimate_motion(
    frame0: np.ndarray, frame1: np.ndarray, min_inliers: int = 12, hfov_deg: float = 90.0
) -> CVMotion:
    """Two-view relative motion from ``frame0`` to ``frame1`` (uint8 RGB, same size).

    KLT tracks are used (ORB finds too few corners at 128x128); the homography maps the image centre
    to give the yaw (pure rotation about the vertical axis moves the centre by ``f tan(yaw)``), the
    radial expansion of tracked points gives forward motion, and ``recoverPose`` on the essential
    matrix gives the sign of the translation when there is enough parallax.
    """
    import cv2

    h, w = frame0.shape[:2]
    K = intrinsics(h, w, hfov_deg)
    g0, g1 = _gray(frame0), _gray(frame1)
    scale = 2.0 if max(h, w) < 200 else 1.0  # more trackable corners on tiny frames
    if scale != 1.0:
        g0 = cv2.resize(g0, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        g1 = cv2.resize(g1, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    p0 = cv2.goodFeaturesToTrack(g0, maxCorners=150, qualityLevel=0.005, minDistance=4)
    none = CVMotion(0.0, 1.0, 0, 0, None)
    if p0 is None or len(p0) < 4:
        return none
    p1, st, _ = cv2.calcOpticalFlowPyrLK(g0, g1, p0, None, winSize=(21, 21), maxLevel=3)
    if p1 is None:
        return none
    ok = st.reshape(-1) == 1
    a, b = p0.reshape(-1, 2)[ok] / scale, p1.reshape(-1, 2)[ok] / scale
    if len(a) < 4:
        return none
    H, mask = cv2.findHomography(a, b, cv2.RANSAC, 2.0)
    if H is None:
        return none
    inl = mask.reshape(-1).astype(bool)
    n_inl = int(inl.sum())
    c = np.array([w / 2, h / 2, 1.0])
    hc = H @ c
    dx = hc[0] / hc[2] - c[0]
    yaw = math.degrees(math.atan2(dx, K[0, 0]))  # scene moves right when the camera turns left
    r0 = np.linalg.norm(a - c[:2], axis=1)
    r1 = np.linalg.norm(b - c[:2], axis=1)
    far = r0 > 0.15 * min(h, w)
    expansion = float(np.median(r1[far] / r0[far])) if far.sum() >= 4 else 1.0
    forward = essential_forward(a, b, K, H) if abs(yaw) < TURN_DEG / 2 else 0
    action: int | None = None
    if n_inl >= min_inliers:
        if yaw >= TURN_DEG / 2:
            action = TURN_LEFT
        elif yaw <= -TURN_DEG / 2:
            action = TURN_RIGHT
        elif expansion > 1.02 or (forward > 0 and expansion > 1.005):
            action = MOVE_FORWARD
        elif abs(yaw) < 2.0 and abs(expansion - 1.0) < 0.005 and abs(dx) < 0.5:
            action = STOP  # no motion: a collision, or the plan stands still
    return CVMotion(yaw, expansion, forward, n_inl, action)


MIN_DISTINCT = 8  # correspondences the essential-matrix estimate needs (RANSAC over five-point samples)
ROTATION_TOL = 0.005  # max singular-value spread of K^-1 H K still taken as a pure rotation (no parallax)


def is_pure_rotation(H: np.ndarray, K: np.ndarray, tol: float = ROTATION_TOL) -> bool:
    """Whether the homography ``H`` is, up to scale, ``K R K^-1``: the pair has no parallax (a pure rotation
    about the camera centre, or no motion), so the translation is undefined. Measured on the unit tests'
    views: rotations of 1-5 deg spread the singular values of ``K^-1 H K`` by <= 0.003, a 2 % zoom by 0.02."""
    M = np.linalg.inv(K) @ np.asarray(H, dtype=np.float64) @ K
    s = np.linalg.svd(M, compute_uv=False)
    return bool(np.all(np.isfinite(s)) and s[-1] > 0 and s[0] / s[-1] - 1.0 < tol)


def essential_forward(a: np.ndarray, b: np.ndarray, K: np.ndarray, H: np.ndarray | None = None) -> int:
    """Sign of the translation along the optical axis from matched points ``a -> b`` (``(N, 2)`` pixels):
    ``+1`` forward, ``-1`` back, ``0`` no estimate.

    No estimate when the pair is degenerate for the five-point solver: fewer than ``MIN_DISTINCT`` distinct
    correspondences, or no parallax (``H``, the pair's homography, computed here when not given, is a pure
    rotation; identical frames included); or when the solver fails anyway. Degenerate pairs are answered
    without calling it because OpenCV 5.x raises on them (``solvePoly`` assertion inside
    ``findEssentialMat``) where 4.x returns an arbitrary ``t``; any ``cv2.error`` left is "no estimate" too.
    """
    import cv2

    a = np.ascontiguousarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.ascontiguousarray(b, dtype=np.float64).reshape(-1, 2)
    if len(a) < MIN_DISTINCT or len(np.unique(np.round(np.hstack([a, b]), 3), axis=0)) < MIN_DISTINCT:
        return 0
    try:
        if H is None:
            H, _ = cv2.findHomography(a, b, cv2.RANSAC, 2.0)
        if H is not None and is_pure_rotation(H, K):
            return 0
        E, emask = cv2.findEssentialMat(a, b, K, method=cv2.RANSAC, prob=0.999, threshold=1.0)
        if E is None or E.shape != (3, 3):
            return 0
        _, _, t, _ = cv2.recoverPose(E, a, b, K, mask=emask)
    except cv2.error as e:
        logger.debug("essential matrix: no estimate (%s)", str(e).strip())
        return 0
    tz = float(t.reshape(-1)[2])
    # OpenCV: x2 = R x1 + t; moving forward along +z makes scene points come closer: t_z < 0
    if abs(tz) > 0.5:
        return 1 if tz < 0 else -1
    return 0


def to_model_frames(frames: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1], the IDM's input layout."""
    x = np.asarray(frames, dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def idm_probs(idm, frames: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Action probabilities ``(N-1, 4)`` for consecutive pairs of ``frames`` uint8 ``(N, H, W, 3)``."""
    import torch

    if len(frames) < 2:
        return np.zeros((0, 4), dtype=np.float32)
    x = torch.from_numpy(to_model_frames(frames)).to(device)
    ih, iw = _idm_input_size(idm)
    if ih is not None and (x.shape[-2], x.shape[-1]) != (ih, iw):
        x = torch.nn.functional.interpolate(x, size=(ih, iw), mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits = idm(x[:-1], x[1:])
        if isinstance(logits, tuple | list):
            logits = logits[0]
        p = torch.softmax(logits.float(), dim=-1)
    return p.cpu().numpy()


def _idm_input_size(idm) -> tuple[int | None, int | None]:
    cfg = getattr(idm, "config", None)
    if cfg is None:
        return None, None
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    h, w = get("height", None), get("width", None)
    if h is None:
        res = get("resolution", None) or get("image_size", None)
        if isinstance(res, int):
            h = w = res
        elif isinstance(res, list | tuple) and len(res) == 2:
            h, w = res
    return (int(h), int(w)) if h is not None and w is not None else (None, None)


def decode_actions(probs: np.ndarray, allow_stop: bool = False) -> np.ndarray:
    """Argmax actions from IDM probabilities; STOP is excluded unless ``allow_stop`` (the agent's stop
    rule, not a single transition, decides when to stop)."""
    if len(probs) == 0:
        return np.zeros((0,), dtype=np.int64)
    p = np.array(probs, copy=True)
    if not allow_stop:
        p[:, STOP] = -1.0
    return p.argmax(axis=1).astype(np.int64)
