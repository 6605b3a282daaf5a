"""Independent evaluator for generated videos: a small detector trained on rendered ground truth.

Why: the paper scores generated videos with an external detector, never with the model's own red box
(a model could draw a centred box on anything). Ours is a tiny fully-convolutional segmenter trained on
frames rendered by the environment, labelled with its exact semantic masks (instance id -> category).
At evaluation time the goal category's predicted region gives the box (-> SD) and its presence (-> IF).
Its own accuracy against the exact semantic render is measured and reported beside the scores.

Training data: frames of the train split's scene videos (``data/train`` shards, the distribution the
gates score), whose category masks are re-rendered at the shards' poses, plus expert episodes in
detector-only scenes (outdoor and held-out categories too). How probabilities become a box (threshold,
minimum area, all pixels or the largest region) is fitted on train scenes the network did not see and
saved in ``config.json``; held-out ``val_scenes`` only reports.

``python -m v4s_agent.evaluation.evaluator_detector --out DIR`` trains one (a few CPU minutes).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .metrics import box_from_mask, sd_from_box

logger = logging.getLogger(__name__)

MIN_FRACTION = 0.01  # "the object is there": at least 1% of the frame (41 px at 64x64)
THRESHOLD = 0.2  # a pixel is the category's when its probability exceeds this
BOX_MODES = ("all", "largest")  # box of every pixel over the threshold, or of its largest 8-connected region
SD_HIT = 0.2  # IF(SD < 0.2): the gates' "object centred" test
DEFAULT_DETECTOR = Path(__file__).resolve().parents[1] / "checkpoints" / "evaluator_detector"
Box = tuple[float, float, float, float]


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
        threshold, min_fraction, box_mode: how :meth:`detect` turns probabilities into a box (see there);
            fitted after training and saved with the weights.
    """

    def __init__(
        self,
        categories: Sequence[str],
        input_size: int = 64,
        width: int = 16,
        global_context: bool = True,
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
        self.threshold = float(threshold)
        self.min_fraction = float(min_fraction)
        self.box_mode = str(box_mode)
        c = width
        self.enc1 = _block(3, c, 1)
        self.enc2 = _block(c, 2 * c, 2)
        self.enc3 = _block(2 * c, 4 * c, 2)
        self.enc4 = _block(4 * c, 4 * c, 2)
        self.context = (
            nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Conv2d(4 * c, 4 * c, 1), nn.SiLU(), nn.Conv2d(4 * c, 4 * c, 1)
            )
            if self.global_context
            else None
        )
        self.dec3 = _block(8 * c, 2 * c, 1)
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

    @classmethod
    def from_pretrained(cls, path: str | Path = DEFAULT_DETECTOR) -> EvaluatorDetector:
        """Load a saved detector; ``.eval()`` mode."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise FileNotFoundError(
                f"no evaluator detector at {path} (train one: python -m {__name__} --out DIR)"
            )
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


# ---------------------------------------------------------------------- data from the env


def category_mask(semantic: np.ndarray, id_to_class: dict[int, int]) -> np.ndarray:
    """Instance-id map -> category-index map (0 for background and unannotated ids)."""
    lut_size = int(max(max(id_to_class, default=0), int(semantic.max(initial=0)))) + 1
    lut = np.zeros(lut_size, dtype=np.int64)
    for k, v in id_to_class.items():
        if k >= 0:
            lut[k] = v
    return lut[np.clip(semantic.astype(np.int64), 0, lut_size - 1)]


def _id_to_class(env: Any, categories: Sequence[str]) -> dict[int, int]:
    return _id_to_class_of(env.unwrapped.scene, categories)


def _id_to_class_of(scene: Any, categories: Sequence[str]) -> dict[int, int]:
    return {
        int(o.instance_id): categories.index(o.category) + 1
        for o in scene.objects
        if o.category in categories
    }


DETECTOR_SEED_OFFSET = 7_000_000  # detector training scenes: disjoint from train/val/outdoor split seeds
SCENE_KINDS = ("indoor", "indoor", "indoor_val_categories", "park", "street")


def detector_scene(i: int, seed: int = 0) -> Any:
    """The ``i``-th detector-training scene: indoor (all indoor categories, held-out ones included) and
    outdoor, from seeds no evaluation split uses, so the evaluator never trained on an evaluated scene."""
    from ..envs.categories import INDOOR_CATEGORIES
    from ..envs.scenes import VAL_CATEGORIES, make_scene

    kind = SCENE_KINDS[i % len(SCENE_KINDS)]
    s = DETECTOR_SEED_OFFSET + seed * 100_000 + i
    if kind == "indoor":
        return make_scene(s, "indoor", INDOOR_CATEGORIES)
    if kind == "indoor_val_categories":
        return make_scene(s, "indoor", tuple(VAL_CATEGORIES) + ("chair", "table", "sofa"))
    return make_scene(s, kind)


def collect_frames(
    n_episodes: int,
    scene: Any = None,
    seed: int = 0,
    resolution: tuple[int, int] = (64, 64),
    max_steps: int = 150,
    every: int = 2,
    categories: Sequence[str] | None = None,
    tail: int = 12,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Rendered frames + category masks along expert episodes (with random detours) of the env.

    ``scene=None`` draws :func:`detector_scene` scenes (one per episode); otherwise the env's ``scene``
    argument (e.g. a split name, for validation). Why expert episodes: they end looking at the goal from
    up close, so positives of every size occur, and the random detours add off-goal views.
    """
    from ..envs import V4SNavEnv
    from ..envs.scenes import CATEGORIES

    categories = list(categories or CATEGORIES)
    rng = np.random.default_rng(seed)
    imgs, masks = [], []
    env = None
    try:
        for ep in range(n_episodes):
            if env is None or scene is None:
                if env is not None:
                    env.close()
                sc = detector_scene(ep, seed) if scene is None else scene
                env = V4SNavEnv(task="object", scene=sc, resolution=resolution, obs_keys=("rgb", "semantic"),
                                context_video="none")  # fmt: skip
            obs, _ = env.reset(seed=int(seed * 10_007 + ep))
            lut = _id_to_class(env, categories)
            ep_imgs, ep_masks = [obs["rgb"]], [category_mask(obs["semantic"], lut).astype(np.uint8)]
            for _ in range(max_steps):
                a = env.unwrapped.expert_action() if rng.random() > 0.25 else int(rng.integers(1, 4))
                if a == 0:
                    break
                obs, _, term, trunc, _ = env.step(a)
                ep_imgs.append(obs["rgb"])
                ep_masks.append(category_mask(obs["semantic"], lut).astype(np.uint8))
                if term or trunc:
                    break
            # every `every`-th frame, plus all of the final approach (what the evaluation scores)
            n = len(ep_imgs)
            keep = sorted(set(range(0, n, every)) | set(range(max(0, n - tail), n)))
            imgs.extend(ep_imgs[i] for i in keep)
            masks.extend(ep_masks[i] for i in keep)
    finally:
        if env is not None:
            env.close()
    return np.stack(imgs), np.stack(masks), categories


def _shard_files(data_dir: str | Path) -> list[tuple[int, Path]]:
    """(scene index, shard path) of a generated data folder (``manifest.json`` or its shard summaries)."""
    data_dir = Path(data_dir)
    man = data_dir / "manifest.json"
    if man.is_file():
        rows = json.loads(man.read_text())["shards"]
    else:
        rows = [json.loads(f.read_text()) for f in sorted(data_dir.glob("shard_*.npz.json"))]
    return [(int(r["scene_index"]), data_dir / r["file"]) for r in rows if (data_dir / r["file"]).is_file()]


def _split_of(data_dir: str | Path) -> str:
    return str(json.loads((Path(data_dir) / "generator.json").read_text())["config"]["split"])


def _pick(spec: Sequence[int] | slice | None, n: int) -> list[int]:
    if spec is None:
        return list(range(n))
    if isinstance(spec, slice):
        return list(range(n))[spec]
    return [i for i in spec if 0 <= i < n]


def collect_video_frames(
    data_dir: str | Path,
    shards: Sequence[int] | slice | None = None,
    tail: int = 6,
    n_random: int = 30,
    seed: int = 0,
    categories: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Frames of generated scene videos (``generate_data`` shards) with category masks re-rendered at the
    shards' poses: the last ``tail`` frames of every visit (what the gates score: a clip ends centred on
    its goal) and ``n_random`` other frames of each video.

    Each scene is rebuilt from the shard folder's split and the re-rendered RGB must equal the stored
    frame (a frame that does not, e.g. data from another renderer version, is left out with a warning).
    """
    from ..envs.renderer_gl import GLRenderer
    from ..envs.scenes import CATEGORIES, split_scene

    categories = list(categories or CATEGORIES)
    split = _split_of(data_dir)
    files = _shard_files(data_dir)
    rng = np.random.default_rng(seed)
    imgs, masks, skipped = [], [], 0
    for k in _pick(shards, len(files)):
        scene_index, f = files[k]
        with np.load(f) as d:
            frames, poses, ends = d["video_frames"], d["video_poses"], d["visit_end"]
        keep = {int(i) for e in ends for i in range(max(0, int(e) - tail + 1), int(e) + 1)}
        rest = np.setdiff1d(np.arange(len(frames)), sorted(keep))
        keep |= {int(i) for i in rng.choice(rest, min(n_random, len(rest)), replace=False)}
        scene = split_scene(split, scene_index)
        lut = _id_to_class_of(scene, categories)
        r = GLRenderer(scene, tuple(frames.shape[1:3]))
        try:
            for i in sorted(keep):
                o = r.render(poses[i], keys=("rgb", "semantic"))
                if not np.array_equal(o["rgb"], frames[i]):
                    skipped += 1
                    continue
                imgs.append(frames[i])
                masks.append(category_mask(o["semantic"], lut).astype(np.uint8))
        finally:
            r.close()
    if skipped:
        logger.warning(
            "%d frames of %s left out: their re-render differs from the stored frame", skipped, data_dir
        )
    if not imgs:
        raise ValueError(f"no frames collected from {data_dir}")
    return np.stack(imgs), np.stack(masks), categories


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Blur, noise and colour jitter: generated frames are blurrier and noisier than renders."""
    b = x.shape[0]
    if torch.rand(1, generator=g).item() < 0.5:
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :]) / 16
        x = nn.functional.conv2d(x, k.expand(3, 1, 3, 3).contiguous(), padding=1, groups=3)
    gain = 1 + 0.2 * (torch.rand(b, 3, 1, 1, generator=g) - 0.5)
    bias = 0.2 * (torch.rand(b, 1, 1, 1, generator=g) - 0.5)
    x = x * gain + bias + 0.06 * torch.rand(1, generator=g).item() * torch.randn(x.shape, generator=g)
    return x.clamp(-1, 1)


def train_detector(
    images: np.ndarray,
    masks: np.ndarray,
    categories: Sequence[str],
    epochs: int = 6,
    batch_size: int = 32,
    lr: float = 3e-3,
    input_size: int = 64,
    width: int = 16,
    seed: int = 0,
    init: EvaluatorDetector | None = None,
    global_context: bool = True,
) -> EvaluatorDetector:
    """Train on (uint8 (N,H,W,3) frames, int (N,H,W) category masks); class-balanced cross-entropy.

    Frames and masks are kept as uint8 and converted batch by batch (tens of thousands of frames fit)."""
    import cv2
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    det = (
        init
        if init is not None
        else EvaluatorDetector(categories, input_size=input_size, width=width, global_context=global_context)
    )
    s = det.input_size
    x = torch.from_numpy(
        np.stack([cv2.resize(np.ascontiguousarray(f), (s, s), interpolation=cv2.INTER_AREA) for f in images])
    ).permute(0, 3, 1, 2)
    y = torch.from_numpy(
        np.stack([cv2.resize(m.astype(np.uint8), (s, s), interpolation=cv2.INTER_NEAREST) for m in masks])
    )
    counts = torch.bincount(y.flatten().long(), minlength=len(categories) + 1).float()
    weight = (counts.sum() / (counts + 1.0)).clamp(max=1e3) ** 0.5
    weight = weight / weight.mean()
    opt = torch.optim.AdamW(det.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    det.train()
    bar = tqdm(total=steps, desc="train evaluator detector", leave=False)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            xb = _augment(x[idx].float() / 127.5 - 1.0, g)
            flip = torch.rand(1, generator=g).item() < 0.5
            yb = y[idx].long()
            if flip:
                xb, yb = xb.flip(-1), yb.flip(-1)
            loss = nn.functional.cross_entropy(det(xb), yb, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return det.eval()


def validate_detector(
    det: EvaluatorDetector, images: np.ndarray, masks: np.ndarray, min_fraction: float = MIN_FRACTION
) -> dict[str, float]:
    """Agreement with the exact semantic render, per (frame, present-or-absent category) pair.

    Returns IF precision/recall (truly visible = at least ``min_fraction`` of the frame; the detector uses
    its own settings), and the mean absolute SD error on frames where both agree the object is visible
    (the truth's box: all of the category's pixels).
    """
    h, w = images.shape[1:3]
    tp = fp = fn = tn = 0
    sd_err: list[float] = []
    for img, m in zip(images, masks, strict=True):
        present = [c for c in np.unique(m) if c > 0]
        absent = [c for c in range(1, len(det.categories) + 1) if c not in present][:2]
        for c in present + absent:
            cat = det.categories[c - 1]
            gt_m = m == c
            gt_vis = gt_m.mean() >= min_fraction
            ((box, _),) = det.detect(img, cat)
            if box is not None and gt_vis:
                tp += 1
                sd_err.append(abs(sd_from_box(box, h, w) - sd_from_box(box_from_mask(gt_m), h, w)))
            elif box is not None:
                fp += 1
            elif gt_vis:
                fn += 1
            else:
                tn += 1
    return {
        "if_precision": tp / max(tp + fp, 1),
        "if_recall": tp / max(tp + fn, 1),
        "if_accuracy": (tp + tn) / max(tp + fp + fn + tn, 1),
        "sd_abs_error": float(np.mean(sd_err)) if sd_err else float("nan"),
        "pairs": tp + fp + fn + tn,
    }


# ---------------------------------------------------------------------- scored on scene videos

Pair = tuple[int, str, Box | None, bool]  # (frame index, category, exact box or None, is a visit's end)


def _box_or_none(b: np.ndarray) -> Box | None:
    return None if np.isnan(b).any() else (float(b[0]), float(b[1]), float(b[2]), float(b[3]))


def scene_video_pairs(
    data_dir: str | Path,
    shards: Sequence[int] | slice | None = None,
    frames_per_scene: int = 40,
    seed: int = 0,
) -> tuple[np.ndarray, list[Pair]]:
    """Frames and (frame, category) pairs of generated scene videos, with the exact boxes of the shards
    (the category's most visible instance, from the semantic render).

    Pairs: the end frame of every centred visit (``visit_ok``) with its goal category (what the gates'
    ``rendered_expert`` block scores), and ``frames_per_scene`` random frames of each video with every
    category in view and up to two of the scene's categories not in view.
    """
    rng = np.random.default_rng(seed)
    frames: list[np.ndarray] = []
    pairs: list[Pair] = []
    files = _shard_files(data_dir)
    for k in _pick(shards, len(files)):
        with np.load(files[k][1]) as d:
            video, boxes, cats = d["video_frames"], d["video_boxes"], [str(c) for c in d["categories"]]
            ok, ends, goal = d["visit_ok"], d["visit_end"], d["visit_category"]

        for v in np.flatnonzero(ok):
            e, c = int(ends[v]), int(goal[v])
            pairs.append((len(frames), cats[c], _box_or_none(boxes[e, c]), True))
            frames.append(video[e])
        for i in sorted(rng.choice(len(video), min(frames_per_scene, len(video)), replace=False).tolist()):
            vis = [c for c in range(len(cats)) if _box_or_none(boxes[i, c]) is not None]
            absent = [c for c in range(len(cats)) if c not in vis][:2]
            pairs += [(len(frames), cats[c], _box_or_none(boxes[i, c]), False) for c in vis + absent]
            frames.append(video[i])
    return (np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)), pairs


def _pair_probs(
    det: EvaluatorDetector, frames: np.ndarray, pairs: Sequence[Pair], chunk: int = 64
) -> np.ndarray:
    """Each pair's category probability map (P, S, S) float16, one network pass per frame."""
    s = det.input_size
    out = np.zeros((len(pairs), s, s), np.float16)
    by_frame: dict[int, list[int]] = {}
    for j, (fi, *_) in enumerate(pairs):
        by_frame.setdefault(fi, []).append(j)
    for a in range(0, len(frames), chunk):
        pr = det.probs(frames[a : a + chunk])
        for fi in range(a, min(a + chunk, len(frames))):
            for j in by_frame.get(fi, []):
                out[j] = pr[fi - a, det.categories.index(pairs[j][1]) + 1]
    return out


def _score_pairs(
    probs: np.ndarray,
    pairs: Sequence[Pair],
    hw: tuple[int, int],
    threshold: float,
    min_fraction: float,
    box_mode: str,
) -> dict[str, Any]:
    """The rendered-expert score and the agreement with the exact semantics, for one box rule."""
    from .metrics import wilson_interval

    h, w = hw
    s = probs.shape[-1]
    end_sd, end_err, frame_err, exact_sd = [], [], [], []
    hits = misses = tp = fp = fn = tn = 0
    agree = {True: [0, 0], False: [0, 0]}  # exact IF(SD<0.2) -> [agreeing, total]
    for p, (_, _, gt, is_end) in zip(probs, pairs, strict=True):
        box, _ = region_box(p.astype(np.float32), threshold, min_fraction, box_mode)
        if box is not None:
            box = (box[0] * w / s, box[1] * h / s, box[2] * w / s, box[3] * h / s)
        sd = sd_from_box(box, h, w) if box is not None else float("nan")
        gt_sd = sd_from_box(gt, h, w) if gt is not None else float("nan")
        det_if, gt_if = bool(box is not None and sd < SD_HIT), bool(gt is not None and gt_sd < SD_HIT)
        agree[gt_if][0] += int(det_if == gt_if)
        agree[gt_if][1] += 1
        if is_end:
            end_sd.append(sd if box is not None else 1.0)  # not found: the worst SD, as the gates count it
            exact_sd.append(gt_sd)
            hits += int(det_if)
            misses += int(box is None)
            if box is not None and gt is not None:
                end_err.append(abs(sd - gt_sd))
            continue
        if box is not None and gt is not None:
            tp += 1
            frame_err.append(abs(sd - gt_sd))
        elif box is not None:
            fp += 1
        elif gt is not None:
            fn += 1
        else:
            tn += 1
    n = len(end_sd)
    lo, hi = wilson_interval(hits, n) if n else (float("nan"), float("nan"))
    ex = np.asarray(exact_sd, np.float64)
    rates = [a / t for a, t in agree.values() if t]
    return {
        "rendered_expert": {
            "clips": n,
            "if_sd_0.2": hits / n if n else float("nan"),
            "if_sd_0.2_wilson95": [lo, hi],
            "sd_mean": float(np.mean(end_sd)) if n else float("nan"),
            "not_found": misses,
            "sd_abs_error": float(np.mean(end_err)) if end_err else float("nan"),
            "exact_semantics_sd_mean": float(np.nanmean(ex)) if n else float("nan"),
            "exact_semantics_if_sd_0.2": float(np.mean(ex < SD_HIT)) if n else float("nan"),
        },
        "frames": {
            "pairs": tp + fp + fn + tn,
            "if_precision": tp / max(tp + fp, 1),
            "if_recall": tp / max(tp + fn, 1),
            "sd_abs_error": float(np.mean(frame_err)) if frame_err else float("nan"),
            "sd_abs_error_median": float(np.median(frame_err)) if frame_err else float("nan"),
        },
        "if_sd_0.2_balanced_accuracy": float(np.mean(rates)) if rates else float("nan"),
    }


def validate_on_scene_videos(
    det: EvaluatorDetector,
    data_dir: str | Path,
    shards: Sequence[int] | slice | None = None,
    frames_per_scene: int = 40,
    seed: int = 0,
) -> dict[str, Any]:
    """The detector with its own box rule on scene-video shards (e.g. held-out ``data/val_scenes``):

    * ``rendered_expert``: the end frame of every centred visit, goal category -> IF(SD < 0.2) with its
      95 % Wilson interval, mean SD (not found = 1.0), as ``training/gates.py`` scores the rendered clips,
      beside the exact-semantics SD;
    * ``frames``: ``frames_per_scene`` random frames per scene -> IF precision/recall and the mean
      |SD error| against the exact box where both see the object;
    * ``if_sd_0.2_balanced_accuracy``: agreement of the IF(SD<0.2) decision with the exact one, all pairs.
    """
    frames, pairs = scene_video_pairs(data_dir, shards, frames_per_scene, seed)
    probs = _pair_probs(det, frames, pairs)
    res = _score_pairs(probs, pairs, frames.shape[1:3], det.threshold, det.min_fraction, det.box_mode)
    return {"data": str(data_dir), "scenes": len(_pick(shards, len(_shard_files(data_dir)))), **res}


def fit_detection(
    det: EvaluatorDetector,
    data_dir: str | Path,
    shards: Sequence[int] | slice | None = None,
    frames_per_scene: int = 40,
    thresholds: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5),
    min_fractions: Sequence[float] = (0.003, 0.005, 0.0075, 0.01, 0.015),
    box_modes: Sequence[str] = BOX_MODES,
    seed: int = 0,
) -> dict[str, Any]:
    """Choose the box rule (threshold, min_fraction, box_mode) on scene videos the network did not train
    on (train-split scenes held out of training; never the evaluation split): the highest balanced
    accuracy of the IF(SD<0.2) decision against the exact semantics (centred visit ends and random
    frames, present and absent categories), ties to the lower |SD error|. Sets it on ``det``."""
    frames, pairs = scene_video_pairs(data_dir, shards, frames_per_scene, seed)
    probs = _pair_probs(det, frames, pairs)
    hw = frames.shape[1:3]
    rows = []
    for bm in box_modes:
        for t in thresholds:
            for mf in min_fractions:
                r = _score_pairs(probs, pairs, hw, t, mf, bm)
                key = (round(r["if_sd_0.2_balanced_accuracy"], 3), -r["frames"]["sd_abs_error"])
                rows.append((key, {"threshold": t, "min_fraction": mf, "box_mode": bm}, r))
    before = _score_pairs(probs, pairs, hw, det.threshold, det.min_fraction, det.box_mode)
    _, best, r = max(rows, key=lambda x: x[0])
    det.threshold, det.min_fraction, det.box_mode = (
        float(best["threshold"]),
        float(best["min_fraction"]),
        best["box_mode"],
    )
    return {
        "data": str(data_dir),
        "pairs": len(pairs),
        "chosen": best,
        "chosen_scores": r,
        "default_scores": before,
    }


def _slice(spec: str | None) -> slice | None:
    """``"a:b"`` -> ``slice(a, b)`` (either side may be empty); ``None`` -> ``None``."""
    if spec is None:
        return None
    a, _, b = spec.partition(":")
    return slice(int(a) if a else None, int(b) if b else None)


def load_or_train(
    path: str | Path | None = None, out_dir: str | Path | None = None, quick: bool = False, seed: int = 0
) -> tuple[EvaluatorDetector, dict[str, Any]]:
    """The detector at ``path`` (default: the shipped one); otherwise train one and save it to ``out_dir``."""
    p = Path(path) if path is not None else DEFAULT_DETECTOR
    if (p / "model.safetensors").is_file():
        det = EvaluatorDetector.from_pretrained(p)
        meta = json.loads((p / "validation.json").read_text()) if (p / "validation.json").is_file() else {}
        return det, {"path": str(p), **meta}
    if path is not None:
        raise FileNotFoundError(f"no evaluator detector at {p}")
    logger.warning("no evaluator detector at %s: training one%s", p, " (quick)" if quick else "")
    det, meta = train_and_save(out_dir or p, episodes=6 if quick else 60, epochs=2 if quick else 8, seed=seed)
    return det, meta


def _warm_start(init: str | Path, global_context: bool) -> EvaluatorDetector:
    """A saved detector to start training from; given a global-context branch (its output layer zeroed,
    so the start computes exactly what the saved one does) when it had none."""
    old = EvaluatorDetector.from_pretrained(init)
    if old.global_context or not global_context:
        return old.train()
    cfg = {**old.config, "global_context": True}
    det = EvaluatorDetector(**cfg)
    missing, unexpected = det.load_state_dict(old.state_dict(), strict=False)
    if unexpected or any(not k.startswith("context.") for k in missing):
        raise ValueError(f"cannot warm-start from {init}: missing {missing}, unexpected {unexpected}")
    assert det.context is not None
    nn.init.zeros_(det.context[-1].weight)
    nn.init.zeros_(det.context[-1].bias)
    return det.train()


def train_and_save(
    out_dir: str | Path,
    episodes: int = 60,
    epochs: int = 8,
    seed: int = 0,
    val_episodes: int | None = None,
    width: int = 16,
    init: str | Path | None = None,
    lr: float = 3e-3,
    video_data: str | Path | None = None,
    video_shards: slice | None = None,
    tail: int = 6,
    random_frames: int = 30,
    tune_shards: slice | None = None,
    val_data: str | Path | None = None,
    global_context: bool = True,
) -> tuple[EvaluatorDetector, dict[str, Any]]:
    """Collect renders (expert episodes in detector scenes, and with ``video_data`` frames of train-split
    scene videos), train, fit the box rule on ``tune_shards`` of ``video_data`` (scenes not trained on),
    validate on held-out val scenes, save with validation.json."""
    t0 = time.time()
    parts = []
    if episodes > 0:
        parts.append(collect_frames(episodes, scene=None, seed=seed)[:2])
    n_episode_frames = len(parts[0][0]) if parts else 0
    if video_data is not None:
        parts.append(collect_video_frames(video_data, video_shards, tail, random_frames, seed)[:2])
    if not parts:
        raise ValueError("nothing to train on: episodes=0 and no video_data")
    imgs = np.concatenate([p[0] for p in parts])
    masks = np.concatenate([p[1] for p in parts])
    from ..envs.scenes import CATEGORIES

    cats = list(CATEGORIES)
    t_data = time.time() - t0
    start = _warm_start(init, global_context) if init else None
    det = train_detector(
        imgs,
        masks,
        cats,
        epochs=epochs,
        seed=seed,
        width=width,
        init=start,
        lr=lr,
        global_context=global_context,
    )
    t_train = time.time() - t0 - t_data
    fit = (
        fit_detection(det, video_data, tune_shards, seed=seed)
        if video_data is not None and tune_shards
        else None
    )
    vi, vm, _ = collect_frames(val_episodes or max(2, episodes // 6), scene="val_scenes", seed=seed + 1)
    meta: dict[str, Any] = {
        "trained_on": {
            "scenes": "detector scenes (seeds 7e6+, indoor + outdoor)"
            + (f" + scene videos of {video_data} shards {video_shards}" if video_data is not None else ""),
            "episodes": episodes,
            "episode_frames": n_episode_frames,
            "video_frames": len(imgs) - n_episode_frames,
            "frames": len(imgs),
            "epochs": epochs,
            "width": width,
            "global_context": global_context,
            "warm_start": str(init) if init else None,
        },
        "detect": {"threshold": det.threshold, "min_fraction": det.min_fraction, "box_mode": det.box_mode},
        "fit": fit,
        "validation": {"scene": "val_scenes", "frames": len(vi), **validate_detector(det, vi, vm)},
        "train_seconds": round(t_train, 1),
        "data_seconds": round(t_data, 1),
    }
    if val_data is not None and Path(val_data).is_dir():
        meta["validation_scene_videos"] = validate_on_scene_videos(det, val_data, seed=seed)
    out = Path(out_dir)
    det.save_pretrained(out)
    from ..integrity import dumps_strict

    tmp = out / "validation.json.tmp"
    tmp.write_text(dumps_strict(meta, indent=2))
    tmp.replace(out / "validation.json")
    return det, {"path": str(out), **meta}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: train the evaluator detector."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT_DETECTOR))
    ap.add_argument("--episodes", type=int, default=60, help="expert episodes in detector-only scenes")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=16, help="channels of the first stage")
    ap.add_argument("--no-global-context", action="store_true", help="the network without pooled context")
    ap.add_argument("--num-threads", type=int, default=1, help="torch threads (1: fastest on a busy CPU)")
    ap.add_argument("--init", default=None, help="warm-start from this detector folder")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--video-data", default="data/train", help="train-split scene-video shards ('' : none)")
    ap.add_argument("--video-shards", default=":216", help="shards trained on (python slice 'a:b')")
    ap.add_argument("--tune-shards", default="216:", help="shards the box rule is fitted on ('' : none)")
    ap.add_argument("--tail", type=int, default=6, help="frames kept at the end of every visit")
    ap.add_argument("--random-frames", type=int, default=30, help="other frames kept per scene video")
    ap.add_argument("--val-data", default="data/val_scenes", help="held-out scene videos (report only)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    video = args.video_data or None
    if video is not None and not Path(video).is_dir():
        ap.error(f"--video-data {video}: no such folder (generate it, or pass --video-data '')")
    _, meta = train_and_save(
        args.out,
        args.episodes,
        args.epochs,
        args.seed,
        width=args.width,
        init=args.init,
        lr=args.lr,
        video_data=video,
        video_shards=_slice(args.video_shards),
        tail=args.tail,
        random_frames=args.random_frames,
        tune_shards=_slice(args.tune_shards) if args.tune_shards else None,
        val_data=args.val_data or None,
        global_context=not args.no_global_context,
    )
    print(json.dumps(meta, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
