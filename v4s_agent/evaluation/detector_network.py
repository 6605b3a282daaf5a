"""The evaluator detector's network: a tiny segmenter of rendered frames, and how its probabilities
become a goal box.

Why: the paper scores generated videos with an external detector, never with the model's own red box
(a model could draw a centred box on anything). Ours is a tiny fully-convolutional segmenter; at
evaluation time the goal category's predicted region gives the box (-> SD) and its presence (-> IF).
Data, training and validation are in :mod:`.detector_data`, :mod:`.detector_training` and
:mod:`.detector_validation`; :mod:`.evaluator_detector` ties them together (and is the CLI).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .metrics import box_from_mask

MIN_FRACTION = 0.01  # "the object is there": at least 1% of the frame (41 px at 64x64)
THRESHOLD = 0.2  # a pixel is the category's when its probability exceeds this
BOX_MODES = ("all", "largest")  # box of every pixel over the threshold, or of its largest 8-connected region
SD_HIT = 0.2  # IF(SD < 0.2): the gates' "object centred" test
DEFAULT_DETECTOR = Path(__file__).resolve().parents[1] / "checkpoints" / "evaluator_detector"
# the agents' goal detector (same network, wider, trained on for the agent; the evaluator stays the scorer)
DEFAULT_GOAL_DETECTOR = Path(__file__).resolve().parents[1] / "checkpoints" / "goal_detector"
Box = tuple[float, float, float, float]
CLI_MODULE = "v4s_agent.evaluation.evaluator_detector"  # trains one: ``python -m CLI_MODULE``


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.GroupNorm(4, cout),
        nn.SiLU(),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
        nn.GroupNorm(4, cout),
        nn.SiLU(),
    )


class EvaluatorDetector(nn.Module):
    """Tiny U-Net-style segmenter: uint8 frames -> per-pixel category logits (0 = background).

    Args:
        categories: the object categories it knows (class ``i+1`` is ``categories[i]``).
        input_size: frames are resized to ``input_size x input_size`` before the network.
        width: channels of the first stage.
        global_context: add the whole frame's pooled features to the coarsest stage (a large object seen
            from up close fills the view: its category is told by the whole frame, not by a local patch).
        bottleneck: channels of the coarsest (1/8 resolution) stage, in multiples of ``width``: capacity
            for telling categories apart where it costs little compute.
        threshold, min_fraction, box_mode: how :meth:`detect` turns probabilities into a box (see there);
            fitted after training and saved with the weights.
    """

    def __init__(
        self,
        categories: Sequence[str],
        input_size: int = 64,
        width: int = 16,
        global_context: bool = True,
        bottleneck: int = 4,
        threshold: float = THRESHOLD,
        min_fraction: float = MIN_FRACTION,
        box_mode: str = "all",
    ) -> None:
        super().__init__()
        if box_mode not in BOX_MODES:
            raise ValueError(f"box_mode must be one of {BOX_MODES}, got {box_mode!r}")
        self.categories = list(categories)
        self.input_size = int(input_size)
        self.width = int(width)
        self.global_context = bool(global_context)
        self.bottleneck = int(bottleneck)
        self.threshold = float(threshold)
        self.min_fraction = float(min_fraction)
        self.box_mode = str(box_mode)
        c = width
        self.enc1 = _block(3, c, 1)
        self.enc2 = _block(c, 2 * c, 2)
        self.enc3 = _block(2 * c, 4 * c, 2)
        b = self.bottleneck * c
        self.enc4 = _block(4 * c, b, 2)
        self.context = (
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(b, b, 1), nn.SiLU(), nn.Conv2d(b, b, 1))
            if self.global_context
            else None
        )
        self.dec3 = _block(b + 4 * c, 2 * c, 1)
        self.dec2 = _block(4 * c, c, 1)
        self.dec1 = _block(2 * c, c, 1)
        self.head = nn.Conv2d(c, len(self.categories) + 1, 1)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "categories": self.categories,
            "input_size": self.input_size,
            "width": self.width,
            "global_context": self.global_context,
            "bottleneck": self.bottleneck,
            "threshold": self.threshold,
            "min_fraction": self.min_fraction,
            "box_mode": self.box_mode,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` float (B, 3, S, S) in [-1, 1] -> logits (B, C+1, S, S)."""
        up = nn.functional.interpolate
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        if self.context is not None:
            e4 = e4 + self.context(e4)
        d3 = self.dec3(torch.cat([up(e4, size=e3.shape[-2:], mode="nearest"), e3], 1))
        d2 = self.dec2(torch.cat([up(d3, size=e2.shape[-2:], mode="nearest"), e2], 1))
        d1 = self.dec1(torch.cat([up(d2, size=e1.shape[-2:], mode="nearest"), e1], 1))
        return self.head(d1)

    # ------------------------------------------------------------------ io
    def save_pretrained(self, path: str | Path) -> None:
        """``config.json`` + ``model.safetensors`` (written to a temp name, then renamed)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json.tmp").write_text(json.dumps(self.config, indent=2))
        save_file(
            {k: v.contiguous() for k, v in self.state_dict().items()}, str(path / "model.safetensors.tmp")
        )
        (path / "config.json.tmp").replace(path / "config.json")
        (path / "model.safetensors.tmp").replace(path / "model.safetensors")
        from v4s_agent.integrity import write_checksums

        write_checksums(path, ["config.json", "model.safetensors"])  # validation.json is written later

    @classmethod
    def from_pretrained(cls, path: str | Path = DEFAULT_DETECTOR) -> EvaluatorDetector:
        """Load a saved detector; ``.eval()`` mode."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise FileNotFoundError(
                f"no evaluator detector at {path} (train one: python -m {CLI_MODULE} --out DIR)"
            )
        from v4s_agent.integrity import verify_weights_folder

        verify_weights_folder(path)  # sha256 where checksums.json exists, finite weights always
        # detectors saved before these keys existed: no global context, the fixed box rule of then
        cfg = {"global_context": False, **json.loads((path / "config.json").read_text())}
        model = cls(**cfg)
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        return model.eval()

    # ------------------------------------------------------------------ inference
    def _prep(self, frames: np.ndarray) -> torch.Tensor:
        import cv2

        s = self.input_size
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        x = np.stack(
            [cv2.resize(np.ascontiguousarray(f), (s, s), interpolation=cv2.INTER_AREA) for f in frames]
        )
        return torch.from_numpy(x.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)

    @torch.no_grad()
    def segment(self, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 (N, H, W, 3) -> category index map int (N, S, S) at the detector resolution."""
        out = []
        x = self._prep(frames)
        for i in range(0, len(x), batch_size):
            out.append(self(x[i : i + batch_size]).argmax(1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.input_size, self.input_size), np.int64)

    @torch.no_grad()
    def probs(self, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 (N, H, W, 3) -> class probabilities float (N, C+1, S, S)."""
        x = self._prep(frames)
        out = [torch.softmax(self(x[i : i + batch_size]), 1).numpy() for i in range(0, len(x), batch_size)]
        return (
            np.concatenate(out)
            if out
            else np.zeros((0, len(self.categories) + 1, self.input_size, self.input_size))
        )

    def detect(
        self,
        frames: np.ndarray,
        category: str,
        min_fraction: float | None = None,
        threshold: float | None = None,
        box_mode: str | None = None,
    ) -> list[tuple[Box | None, float]]:
        """Goal boxes in each frame's own pixel coordinates, and the goal region's area fraction.

        The region is the pixels whose ``category`` probability exceeds ``threshold`` (all of them, or
        with ``box_mode="largest"`` their largest 8-connected component: one instance, as the exact
        semantics' box is the most visible instance's); the box is its tight box, ``None`` (not visible)
        when it covers less than ``min_fraction`` of the frame. Unset arguments take the detector's own
        values (``config.json``: fitted on held-out train scenes, see :func:`fit_detection`).
        """
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if category not in self.categories:
            raise ValueError(f"category {category!r} unknown to the detector ({len(self.categories)} known)")
        cls_id = self.categories.index(category) + 1
        h, w = frames.shape[1:3]
        s = self.input_size
        res: list[tuple[Box | None, float]] = []
        for p in self.probs(frames):
            box, frac = region_box(
                p[cls_id],
                self.threshold if threshold is None else threshold,
                self.min_fraction if min_fraction is None else min_fraction,
                self.box_mode if box_mode is None else box_mode,
            )
            if box is not None:
                x0, y0, x1, y1 = box
                box = (x0 * w / s, y0 * h / s, x1 * w / s, y1 * h / s)
            res.append((box, frac))
        return res


def region_box(
    prob: np.ndarray, threshold: float, min_fraction: float, box_mode: str
) -> tuple[Box | None, float]:
    """One category's probability map (S, S) -> (tight box in map pixels or ``None``, region fraction)."""
    m = prob > threshold
    if box_mode == "largest" and m.any():
        import cv2

        n, lab, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
        if n > 2:
            m = lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    elif box_mode not in BOX_MODES:
        raise ValueError(f"box_mode must be one of {BOX_MODES}, got {box_mode!r}")
    frac = float(m.mean())
    if frac < min_fraction:
        return None, frac
    return box_from_mask(m), frac  # type: ignore[return-value]
