"""A diagnostic goal detector that reads the env's exact semantic render of the agent's live frame.

Why: the frontier baseline and our agent both stop on a learned detector, so a closed-loop failure can be
the detector's (a confusion, a part of the object, two instances merged) or the search's. Swapping the
detector for exact semantics on the frames the agent sees (``evaluate --agent-detector oracle``) splits
the two: what is still lost with it is the map, the search and the stop rule. It is privileged (it reads
the simulator) and only for that measurement; the frames that are not the live view (the context video)
still go to the learned detector, so the context is used as in the real rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ORACLE = "oracle"  # the ``--agent-detector`` value that selects it


class OracleGoalDetector:
    """``probs`` like :class:`~.detector_network.EvaluatorDetector`, exact for the env's current frame.

    Args:
        fallback: the learned detector (categories, output size, and the answer for other frames).
        env: the ``V4SNav-v0`` env the agent acts in (its last rendered RGB and semantic ids are read).
    """

    def __init__(self, fallback: Any, env: Any) -> None:
        u = getattr(env, "unwrapped", env)
        if not hasattr(u, "_last_semantic"):  # a V4SNav-v0 env, reset or not
            raise ValueError("the oracle detector needs a V4SNav-v0 env (it reads its semantic render)")
        self.fallback, self._env = fallback, u
        self.categories = list(fallback.categories)
        # the learned detector's box rule, so ``detect`` (the fitted stop) reads the exact map the same way
        for a in ("input_size", "threshold", "min_fraction", "box_mode"):
            setattr(self, a, getattr(fallback, a))
        self.live_frames = 0  # frames answered exactly (the rest went to the fallback)

    def _live_mask(self, size: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(last RGB, category index map at ``size`` x ``size``) of the env's current view."""
        import cv2

        from .detector_data import _id_to_class_of, category_mask

        rgb, sem = getattr(self._env, "_last_rgb", None), self._env._last_semantic
        if rgb is None or sem is None:
            return None
        cm = category_mask(sem, _id_to_class_of(self._env.scene, self.categories)).astype(np.uint8)
        return rgb, cv2.resize(cm, (size, size), interpolation=cv2.INTER_NEAREST)

    def probs(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> (N, C+1, S, S): one-hot exact categories for the live frame."""
        frames = np.asarray(frames)
        out = np.array(self.fallback.probs(frames), dtype=np.float32, copy=True)
        live = self._live_mask(out.shape[-1]) if len(frames) else None
        if live is None:
            return out
        rgb, cm = live
        for i, f in enumerate(frames):
            if f.shape == rgb.shape and np.array_equal(f, rgb):
                out[i] = np.eye(out.shape[1], dtype=np.float32)[cm.astype(np.int64)].transpose(2, 0, 1)
                self.live_frames += 1
        return out

    def detect(self, frames: np.ndarray, category: str, **kw: Any) -> list[tuple[Any, float]]:
        """Boxes by the learned detector's box rule, read from :meth:`probs` (exact on the live frame)."""
        from .detector_network import EvaluatorDetector

        return EvaluatorDetector.detect(self, frames, category, **kw)  # type: ignore[arg-type]
