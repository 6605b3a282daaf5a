"""The evaluator detector's training data: rendered frames with exact category masks.

Two sources: expert episodes (with random detours) in detector-only scenes, whose seeds no evaluation
split uses (outdoor and held-out categories too), and frames of generated scene videos (``data/train``
shards) whose category masks are re-rendered at the shards' poses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


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
    resolution: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Frames of generated scene videos (``generate_data`` shards) with category masks re-rendered at the
    shards' poses: the last ``tail`` frames of every visit (what the gates score: a clip ends centred on
    its goal) and ``n_random`` other frames of each video.

    Each scene is rebuilt from the shard folder's split and the re-rendered RGB must equal the stored
    frame (a frame that does not, e.g. data from another renderer version, is left out with a warning).
    With ``resolution`` (other than the shards'), the frames and masks are rendered at the videos' poses
    at that size (a detector for the agent's finer frames); the stored frame is still the check.
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
        stored = tuple(frames.shape[1:3])
        size = stored if resolution is None else tuple(resolution)
        r = GLRenderer(scene, stored)
        fine = GLRenderer(scene, size) if size != stored else None
        try:
            for i in sorted(keep):
                o = r.render(poses[i], keys=("rgb",) if fine is not None else ("rgb", "semantic"))
                if not np.array_equal(o["rgb"], frames[i]):
                    skipped += 1
                    continue
                if fine is not None:
                    o = fine.render(poses[i], keys=("rgb", "semantic"))
                imgs.append(o["rgb"] if fine is not None else frames[i])
                masks.append(category_mask(o["semantic"], lut).astype(np.uint8))
        finally:
            r.close()
            if fine is not None:
                fine.close()
    if skipped:
        logger.warning(
            "%d frames of %s left out: their re-render differs from the stored frame", skipped, data_dir
        )
    if not imgs:
        raise ValueError(f"no frames collected from {data_dir}")
    return np.stack(imgs), np.stack(masks), categories
