"""The scene video: one continuous, dense camera video of a scene, as Video4Spatial conditions on.

Why this recipe: the paper's context frames and its training clips come from the same capture of a scene.
Here the capture is the env's own agent driven by its shortest-path expert from object to object: every
visit ends with the object centred in view, and a full look-around (24 turns of 15 degrees) follows each
visit, so the video holds every object it visited both at the end of the approach and again, exactly, 24
frames later. Each frame is one action apart (0.25 m or 15 degrees), so any segment of the video is a
valid agent trajectory: object clips end a visit, pose clips are any segment with its camera path, and the
action after each frame is kept for the inverse-dynamics model.

Scenes with no reachable objects (a user's GLB without annotation) get the covering tour of ``tour.py``
instead (``tour_as_video``), rendered at ``fallback_frames`` frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .actions import FORWARD_STEP_M, TURN_ANGLE_DEG, TURN_LEFT
from .goal_metrics import box_from_mask, sd_from_box

LOOK_AROUND_STEPS = 24  # 24 x 15 deg: back to the view it started from


@dataclass
class SceneVideoConfig:
    """How a scene video is recorded.

    Args:
        max_visit_steps: expert actions per visit at most (a visit that does not end is cut).
        max_frames: the video's length: every scene video has exactly this many frames (so vector envs can
            stack them): visits go on, category after category and round after round (each visit goes to
            the category's nearest reachable instance from where the camera is), until it is reached;
            the last visit may be cut.
        max_visits_per_category: rounds over the categories at most; a scene whose visits end earlier is
            filled with look-arounds in place.
        look_around: a 360-degree turn in place at the start and after every visit.
        fallback_frames: frames of the covering tour for scenes without objects.
    """

    max_visit_steps: int = 120
    max_frames: int = 720
    max_visits_per_category: int = 4
    look_around: bool = True
    fallback_frames: int = 720

    def __post_init__(self) -> None:
        for k in ("max_visit_steps", "max_frames", "max_visits_per_category", "fallback_frames"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1. Got {getattr(self, k)}")


def category_boxes(semantic: np.ndarray, instance_category: dict[int, int], n_categories: int) -> np.ndarray:
    """``(C, 4)`` float32 box of each category's most visible instance in one frame (NaN: not in view).

    The pixel threshold is the env's (``max(4, H*W // 2000)``), so "visible" means what the env's
    ``goal_visible`` means.
    """
    h, w = semantic.shape
    out = np.full((n_categories, 4), np.nan, np.float32)
    ids, counts = np.unique(semantic, return_counts=True)
    best: dict[int, tuple[int, int]] = {}
    for i, n in zip(ids.tolist(), counts.tolist(), strict=True):
        c = instance_category.get(int(i))
        if c is not None and n > best.get(c, (0, -1))[1]:
            best[c] = (int(i), int(n))
    for c, (i, _) in best.items():
        box = box_from_mask(semantic == i, min_pixels=max(4, (h * w) // 2000))
        if box is not None:
            out[c] = box
    return out


def record_scene_video(env: Any, seed: int, cfg: SceneVideoConfig | None = None) -> dict[str, np.ndarray]:
    """Drive ``env`` (a ``V4SNavEnv`` with ``task="object"`` and ``"semantic"`` in ``obs_keys``) through
    the scene and return the video.

    Returns arrays: ``frames`` uint8 (N, H, W, 3), ``poses`` float64 (N, 4, 4), ``actions`` int64 (N,)
    (the action after each frame, -1 after the last), ``boxes`` float32 (N, C, 4) (box of each category
    per frame), ``categories`` (C,) str, and one row per visit: ``visit_category`` int64 (V,) (index into
    ``categories``), ``visit_start``, ``visit_end`` int64 (first frame, the frame that ends the approach),
    ``visit_sd`` float32 (the goal's SD in the end frame, NaN if not visible), ``visit_ok`` bool (the
    end frame centres the goal: visible with SD < 0.2 within 1 m).
    """
    cfg = cfg or SceneVideoConfig()
    if getattr(env, "task", None) != "object" or "semantic" not in getattr(env, "obs_keys", ()):
        raise ValueError("record_scene_video needs an object-task env with 'semantic' in obs_keys")
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=int(rng.integers(2**31)))
    scene = env.scene
    cats = list(scene.categories)
    inst = {int(o.instance_id): cats.index(o.category) for o in scene.objects if o.category in cats}
    frames: list[np.ndarray] = []
    poses: list[np.ndarray] = []
    actions: list[int] = []
    boxes: list[np.ndarray] = []
    visits: list[tuple[int, int, int, float, bool]] = []

    def record(o: dict, inf: dict) -> None:
        frames.append(o["rgb"])
        poses.append(inf["agent_pose"])
        boxes.append(category_boxes(o["semantic"], inst, len(cats)))

    def look_around() -> tuple[dict, dict]:
        o, inf = obs, info
        for _ in range(LOOK_AROUND_STEPS):
            if len(frames) >= cfg.max_frames:
                break
            actions.append(TURN_LEFT)
            o, _, _, _, inf = env.step(TURN_LEFT)
            record(o, inf)
        return o, inf

    current = str(info["goal_category"])  # the episode the camera is in (reachable from here)
    record(obs, info)
    if cfg.look_around:
        obs, info = look_around()
    order = [c for _ in range(cfg.max_visits_per_category) for c in rng.permutation(len(cats)).tolist()]
    for ci in order:
        if len(frames) >= cfg.max_frames:
            break
        x, z = float(info["agent_pose"][0, 3]), float(info["agent_pose"][2, 3])
        fwd = -info["agent_pose"][:3, 2]
        yaw = float(np.arctan2(-fwd[0], -fwd[2]))
        try:
            obs, info = env.reset(options={"goal_category": cats[ci], "start": (x, z, yaw)})
        except ValueError:  # no reachable instance of this category from here: back to the last episode
            obs, info = env.reset(options={"goal_category": current, "start": (x, z, yaw)})
            continue
        current = cats[ci]
        start = len(frames) - 1  # the reset re-renders the current view: the visit starts at that frame
        for _ in range(cfg.max_visit_steps):
            a = int(env.expert_action())
            if a == 0 or len(frames) >= cfg.max_frames:
                break
            actions.append(a)
            obs, _, _, _, info = env.step(a)
            record(obs, info)
        end = len(frames) - 1
        sd = float(info.get("goal_sd", np.nan))
        ok = bool(info.get("goal_visible")) and np.isfinite(sd) and sd < 0.2 and env._near_goal_object()
        visits.append((ci, start, end, sd, ok))
        if cfg.look_around:
            obs, info = look_around()
    while len(frames) < cfg.max_frames:  # visits ran out: look around in place until the length is reached
        obs, info = look_around()
    actions.append(-1)
    v = np.asarray(visits, dtype=object).reshape(-1, 5)
    return {
        "frames": np.stack(frames).astype(np.uint8),
        "poses": np.stack(poses).astype(np.float64),
        "actions": np.asarray(actions, np.int64),
        "boxes": np.stack(boxes).astype(np.float32),
        "categories": np.asarray(cats, dtype=np.str_) if cats else np.zeros(0, "<U1"),
        "visit_category": v[:, 0].astype(np.int64),
        "visit_start": v[:, 1].astype(np.int64),
        "visit_end": v[:, 2].astype(np.int64),
        "visit_sd": v[:, 3].astype(np.float32),
        "visit_ok": v[:, 4].astype(bool),
    }


def tour_as_video(tour: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The covering tour in the scene video's layout, without visits (scenes with no reachable objects)."""
    n = len(tour["frames"])
    return {
        "frames": np.array(tour["frames"]),
        "poses": np.array(tour["poses"]),
        "actions": np.full(n, -1, np.int64),
        "boxes": np.zeros((n, 0, 4), np.float32),
        "categories": np.zeros(0, "<U1"),
        "visit_category": np.zeros(0, np.int64),
        "visit_start": np.zeros(0, np.int64),
        "visit_end": np.zeros(0, np.int64),
        "visit_sd": np.zeros(0, np.float32),
        "visit_ok": np.zeros(0, bool),
    }


def video_sd(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """SD of every (frame, category) box (NaN where not visible)."""
    out = np.full(boxes.shape[:-1], np.nan, np.float32)
    for idx in zip(*np.nonzero(~np.isnan(boxes).any(-1)), strict=True):
        out[idx] = sd_from_box(tuple(boxes[idx].tolist()), height, width)
    return out


# ---------------------------------------------------------------------------------------------- clips
# How training cuts a sample from a scene video (and the held-out gates cut the same clips). The arrays
# are a training shard's (``video_*`` / ``visit_*`` keys: ``record_scene_video``'s with a ``video_`` prefix).


def sample_context(
    candidates: np.ndarray, k: int, mode: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Video indices and RoPE positions of ``k`` context frames drawn from ``candidates`` (sorted indices).

    ``sparse``: a random sorted subset (positions = source indices in the video, the paper's
    non-contiguous context); ``contiguous``: ``k`` consecutive candidates (positions 0..k-1, the ablation).
    """
    n = len(candidates)
    if n < 1:
        raise ValueError("no context candidates: the video is no longer than the clip")
    if mode == "sparse":
        idx = np.sort(candidates[rng.choice(n, size=k, replace=n < k)])
        return idx, idx.astype(np.float32)
    if mode == "contiguous":
        start = int(rng.integers(0, max(1, n - k + 1)))
        idx = candidates[np.minimum(np.arange(start, start + k), n - 1)]
        return idx, np.arange(k, dtype=np.float32)
    raise ValueError(f"context mode must be 'sparse' or 'contiguous'. Got {mode!r}")


def view_distance(poses: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """How far each camera of ``poses (N,4,4)`` is from ``ref (4,4)``: metres / 0.5 + heading / 30 deg."""
    dp = np.linalg.norm(poses[:, [0, 2], 3] - ref[[0, 2], 3], axis=1)
    fwd, f0 = -poses[:, :3, 2], -ref[:3, 2]
    cos = np.clip((fwd * f0).sum(1) / (np.linalg.norm(fwd, axis=1) * np.linalg.norm(f0) + 1e-9), -1, 1)
    return dp / 0.5 + np.degrees(np.arccos(cos)) / 30.0


def clip_window(shard: dict[str, np.ndarray], kind: str, ep: int, n: int, at_end: bool,
                rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """``n`` consecutive video frames: an object clip ends in visit ``ep`` (at its centred end frame when
    ``at_end``); a pose clip is any segment. Clips near the video's start repeat frame 0 (standing still)."""
    n_video = len(shard["video_frames"])
    if kind == "obj":
        start, end = int(shard["visit_start"][ep]), int(shard["visit_end"][ep])
        last = end if at_end else int(rng.integers(min(start + n - 1, end), end + 1))
    else:
        last = int(rng.integers(min(n - 1, n_video - 1), n_video))
    return np.clip(np.arange(last - n + 1, last + 1), 0, n_video - 1)


def choose_context(
    shard: dict[str, np.ndarray],
    widx: np.ndarray,
    k: int,
    mode: str,
    rng: np.random.Generator,
    near_prob: float = 0.0,
    goal_category: int | None = None,
    near_frames: int = 1,
    near_margin: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` context frames from the rest of the video (never the clip's own frames).

    With probability ``near_prob`` one of them is the video frame whose view is closest to the clip's
    final view (for an object clip that ends a visit: the same view after the look-around), and with
    ``near_frames > 1`` also the closest views of that many clip frames in all (the last, every other one
    back, then the ones skipped; at most ``k - 1``). ``near_margin > 0`` looks for those views only outside
    ``near_margin`` frames either side of the clip: another pass of the video through the same place, not
    the clip's own continuation (as a path given at use time meets a separately recorded video). For an
    object clip the goal is in view in at least one context frame whenever the video has such a frame.
    """
    n_video = len(shard["video_frames"])
    keep = np.ones(n_video, bool)
    keep[int(widx.min()) : int(widx.max()) + 1] = False
    cand = np.nonzero(keep)[0]
    cidx, cpos = sample_context(cand, k, mode, rng)
    if mode != "sparse":
        return cidx, cpos
    fixed: list[int] = []
    if near_prob > 0 and rng.random() < near_prob:
        back = widx[::-1]  # the last frame, every other one back, then the ones skipped
        refs = np.concatenate([back[0::2], back[1::2]])[: max(1, min(near_frames, k - 1))]
        pool = cand
        if near_margin > 0:
            outside = (cand < int(widx.min()) - near_margin) | (cand > int(widx.max()) + near_margin)
            pool = cand[outside] if outside.any() else cand
        slots = rng.permutation(k)
        for ref in refs:
            near = int(pool[np.argmin(view_distance(shard["video_poses"][pool], shard["video_poses"][ref]))])
            if near in fixed:
                continue
            if near not in cidx:
                cidx[next(int(i) for i in slots if int(cidx[i]) not in fixed)] = near
            fixed.append(near)
    if goal_category is not None:
        vis = ~np.isnan(shard["video_boxes"][cand, goal_category]).any(-1)
        if vis.any() and not (~np.isnan(shard["video_boxes"][cidx, goal_category]).any(-1)).any():
            free = [i for i in range(k) if int(cidx[i]) not in fixed]
            cidx[free[int(rng.integers(len(free)))]] = int(rng.choice(cand[vis]))
    cidx = np.sort(cidx)
    return cidx, cidx.astype(np.float32)


# frames either side of a pose clip that ``choose_view_context`` never takes its matched views from: about
# a look-around or a few metres of walking, so the matches come from another pass of the video
VIEW_MARGIN = 16


def choose_view_context(
    shard: dict[str, np.ndarray],
    widx: np.ndarray,
    k: int,
    rng: np.random.Generator,
    margin: int = VIEW_MARGIN,
) -> tuple[np.ndarray, np.ndarray]:
    """A pose clip's context when its camera path is given: for each clip frame (at most ``k - 1``) the
    video frame whose view is closest to it from another pass of the video (outside ``margin`` frames
    either side of the clip), the rest a natural sample. How a path given at use time meets a separately
    recorded video of the scene (the WorldMem / Context-as-Memory retrieval by view)."""
    return choose_context(shard, widx, k, "sparse", rng, 1.0, None, len(widx), margin)


# goal views a plan's context gets (``choose_goal_context``): up to half the context, the rest a sample of
# the scene. Six, not two: the step-23,000 planner (trained with two) already ends more clips on its goal
# with six (IF 0.49 vs 0.42 on the held-out gates, docs/RESULTS.md)
GOAL_VIEWS = 6


def exact_goal_frames(shard: dict[str, np.ndarray], category: int, max_sd: float = 0.2) -> np.ndarray:
    """Sorted indices of the video frames whose exact (semantic) box of ``category`` is centred: the
    training-time stand-in for the detector's ``agent.context_views.goal_centred_frames``."""
    cache = shard.setdefault("_goal_frames", {})  # type: ignore[arg-type]  (training reuses a shard)
    if (category, max_sd) not in cache:
        h, w = shard["video_frames"].shape[1:3]
        sd = video_sd(shard["video_boxes"][:, category : category + 1], h, w)[:, 0]
        cache[(category, max_sd)] = np.nonzero(sd <= max_sd)[0]
    return cache[(category, max_sd)]


# how goal views are ranked (``nearest_distinct_views``): "reach", the turn-go-turn actions from the
# observation to the view, or "floor", the floor distance (the rule up to the step-38,147 planner). Reach
# puts a view of where an object clip ends first in 80 % of the train shards' clips (floor: 66 %), and
# among the first two in 93 % (floor: 83 %): the floor-nearest view is often behind the camera or faces
# the goal from another side (``launch/experiments/goal_view_ranking.py``)
GOAL_RANKS = ("reach", "floor")
GOAL_RANK = "reach"


def reach_steps(here: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """``(N,)`` actions a turn-go-turn path from the camera ``here (4, 4)`` takes to each of ``poses
    (N, 4, 4)``: turns to face it, forward steps, turns to its heading (obstacles ignored). Why: a plan
    ends where the agent can get within its horizon, so the goal view to show it is the soonest reached,
    not the nearest on the floor."""
    here, poses = np.asarray(here, np.float64), np.asarray(poses, np.float64).reshape(-1, 4, 4)
    d = poses[:, [0, 2], 3] - here[[0, 2], 3]
    dist = np.linalg.norm(d, axis=1)
    yaw0 = np.arctan2(-here[0, 2], -here[2, 2])  # cameras look along -z
    yaw1 = np.arctan2(-poses[:, 0, 2], -poses[:, 2, 2])
    travel = np.arctan2(d[:, 0], d[:, 1])
    turn = np.radians(TURN_ANGLE_DEG)

    def turns(a: np.ndarray) -> np.ndarray:
        return np.round(np.abs((a + np.pi) % (2 * np.pi) - np.pi) / turn)

    far = dist > FORWARD_STEP_M / 2
    walk = turns(travel - yaw0) + np.ceil(dist / FORWARD_STEP_M) + turns(yaw1 - travel)
    return np.where(far, walk, turns(yaw1 - yaw0))


def nearest_distinct_views(poses: np.ndarray, candidates: np.ndarray, here: np.ndarray, n: int,
                           rank: str = GOAL_RANK) -> list[int]:  # fmt: skip
    """Up to ``n`` of the ``candidates`` (indices into ``poses (N, 4, 4)``), the one nearest the camera
    ``here (4, 4)`` first (``rank``: fewest ``reach_steps``, ties by floor distance; or floor distance
    only), each from another viewpoint than those already taken (``view_distance`` > 1): the goal views
    a plan's context gets, in training and at use time."""
    if rank not in GOAL_RANKS:
        raise ValueError(f"rank must be one of {GOAL_RANKS}. Got {rank!r}")
    here = np.asarray(here, np.float64)
    if here.shape != (4, 4):
        raise ValueError(f"here must be a (4, 4) camera pose. Got shape {here.shape}")
    c = np.asarray(candidates, np.int64)
    floor = np.linalg.norm(poses[c][:, [0, 2], 3] - here[[0, 2], 3], axis=1)
    keys = (floor,) if rank == "floor" else (floor, reach_steps(here, poses[c]))
    order = c[np.lexsort(keys)]
    picked: list[int] = []
    for j in order:
        if len(picked) >= n:
            break
        if all(view_distance(poses[[int(j)]], poses[q])[0] > 1.0 for q in picked):
            picked.append(int(j))
    return picked


def choose_goal_context(
    shard: dict[str, np.ndarray],
    widx: np.ndarray,
    k: int,
    rng: np.random.Generator,
    goal_frames: np.ndarray,
    category: int | None,
    n_goal: int = GOAL_VIEWS,
    margin: int = VIEW_MARGIN,
    rank: str = GOAL_RANK,
) -> tuple[np.ndarray, np.ndarray]:
    """An object clip's context when the video's views of the goal are known (``goal_frames``: frames
    that show it centred): the natural sample (``choose_context``) with up to ``n_goal`` of its frames
    replaced by goal views from another pass of the video (outside ``margin`` frames either side of the
    clip), the one nearest the observation first (``nearest_distinct_views`` by ``rank``), then the
    nearest from another viewpoint.
    Why: an agent asked for an object knows where its detector saw it in the scene video, and the plan
    can only head for a view it is shown."""
    cidx, _ = choose_context(shard, widx, k, "sparse", rng, 0.0, category)
    g = np.asarray(goal_frames, np.int64)
    g = g[(g < int(widx.min()) - margin) | (g > int(widx.max()) + margin)]
    if len(g) == 0:
        return cidx, cidx.astype(np.float32)
    poses = shard["video_poses"]
    picked = nearest_distinct_views(poses, g, poses[widx[0]], min(n_goal, k - 1), rank)
    slots = [i for i in rng.permutation(k) if int(cidx[i]) not in picked]
    for j in picked:
        if j not in cidx:
            cidx[slots.pop(0)] = j
    cidx = np.sort(cidx)
    return cidx, cidx.astype(np.float32)


def clip_and_context(
    shard: dict[str, np.ndarray],
    kind: str,
    ep: int,
    n: int,
    k: int,
    at_end: bool,
    rng: np.random.Generator,
    mode: str = "sparse",
    near_prob: float = 0.0,
    near_frames: int = 1,
    view_prob: float = 0.0,
    goal_prob: float = 0.0,
    goal_frames: np.ndarray | None = None,
    n_goal: int = GOAL_VIEWS,
    goal_rank: str = GOAL_RANK,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None]:
    """The one clip cutter of training and the held-out gates: the clip's ``n`` video frames
    (``clip_window``), its ``k`` context frames and their positions, and the goal category of an object
    clip (``None`` for a pose clip). With probability ``view_prob`` a pose clip's context is
    ``choose_view_context``'s, with probability ``goal_prob`` an object clip's is ``choose_goal_context``'s
    (``goal_frames``: the frames that show its goal centred, by default the exact boxes'; at most ``n_goal``
    of them, ranked by ``goal_rank``), else ``choose_context``'s (a probability is drawn only when
    strictly between 0 and 1)."""
    widx = clip_window(shard, kind, ep, n, at_end, rng)
    cat = int(shard["visit_category"][ep]) if kind == "obj" else None
    prob = view_prob if kind == "pose" else goal_prob
    special = mode == "sparse" and prob > 0
    if special and prob < 1:
        special = bool(rng.random() < prob)
    if special and kind == "pose":
        cidx, cpos = choose_view_context(shard, widx, k, rng)
    elif special:
        g = exact_goal_frames(shard, int(cat)) if goal_frames is None else goal_frames
        cidx, cpos = choose_goal_context(shard, widx, k, rng, g, cat, n_goal, rank=goal_rank)
    else:
        cidx, cpos = choose_context(shard, widx, k, mode, rng, near_prob, cat, near_frames)
    return widx, cidx, cpos, cat


def closest_views(poses: np.ndarray, path: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``k`` frames of a video with camera ``poses (N, 4, 4)`` for a plan along the
    camera ``path (T, 4, 4)``: each path pose's closest view (``view_distance``; the last pose first, then
    every other one back, then the ones skipped; at most ``k - 1``), the rest a random sample of the
    other frames. The use-time twin of ``choose_view_context`` (the path is not part of the video here,
    so nothing is held out)."""
    poses, path = np.asarray(poses, dtype=np.float64), np.asarray(path, dtype=np.float64)
    n = len(poses)
    if n < 1 or k < 1 or len(path) < 1:
        raise ValueError(f"need >= 1 video frame, k >= 1 and a path. Got {n} frames, k={k}, path {len(path)}")
    if n <= k:
        return np.sort(np.concatenate([np.arange(n), np.linspace(0, n - 1, k - n).round().astype(int)]))
    back = path[::-1]
    refs = np.concatenate([back[0::2], back[1::2]])[: k - 1]
    chosen: list[int] = []
    for ref in refs:
        j = int(np.argmin(view_distance(poses, ref)))
        if j not in chosen:
            chosen.append(j)
    rest = np.setdiff1d(np.arange(n), chosen)
    fill = rng.choice(rest, size=k - len(chosen), replace=False)
    return np.sort(np.concatenate([np.asarray(chosen, int), fill.astype(int)]))


def other_scene_index(scenes: list[int]) -> list[int]:
    """For each item, the next item (cyclically) from a different scene: the "another scene's context"
    condition of the held-out probe and the gates (the next item when every item shares one scene)."""
    n = len(scenes)
    return [
        next((j for j in [*range(i + 1, n), *range(i)] if scenes[j] != scenes[i]), (i + 1) % max(n, 1))
        for i in range(n)
    ]
