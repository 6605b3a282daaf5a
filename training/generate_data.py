"""Training data from the environment: one streaming shard per scene.

Why one shard per scene: the model's context (a sparse sample of the scene's tour video) and its targets
(episodes in the same scene) must come from the same scene, so a scene is the natural unit of work, of
resumption (a finished shard is never redone) and of per-rank sharding in the loader.

A shard ``shard_XXXXXX.npz`` holds (frames are uint8 ``(H, W, 3)``, poses float64 4x4 ``T_wc``):

* ``tour_frames (N,H,W,3)``, ``tour_poses (N,4,4)``: the context tour video (the env's ``get_context()``).
* object-grounding expert episodes, concatenated: ``obj_frames (sum L,H,W,3)``, ``obj_poses``,
  ``obj_boxes (sum L,4)`` (goal box per frame, NaN when not visible), ``obj_actions (sum L,)`` (action
  taken *after* each frame, -1 for the last), ``obj_offsets (E+1,)``, ``obj_box_frames (E,H,W,3)`` (the
  episode's final frame with the goal's red box drawn: the auxiliary frame), ``obj_category``,
  ``obj_instructions (E, n_instr)`` (the env's instruction plus varied templates).
* pose-path episodes, same layout with the ``pose_`` prefix (``pose_camera (sum L,12)`` = relative pose of
  each frame to the episode's first frame) and ``pose_instructions``.
* inverse-dynamics transitions: the expert's are read from the episodes (frame i, frame i+1, action i);
  ``idm_frame0 (M,H,W,3)``, ``idm_frame1``, ``idm_actions (M,)`` add a random walk (balanced actions, STOP
  and collision transitions) without storing every episode frame twice.

``manifest.json`` lists the shards with counts and checksums, the generator's seed and version.

    python -m v4s_agent.training.generate_data --split train --scenes 64 --out data/train --workers 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: 1.1: procedural patterns are baked, mipmapped textures (33 dB from 1.0 at 64²); 1.2: minification
#: bilinear in the nearest mip level (``renderer_gl.MIN_FILTER``; 49.6 dB at worst from 1.1 at 128²)
GENERATOR_VERSION = "1.2"
MANIFEST = "manifest.json"

# instruction templates (object task); {c} is the category as words ("potted plant")
OBJECT_TEMPLATES: tuple[str, ...] = (
    "Go to the {c}.",
    "Find the {c}.",
    "Navigate to the {c}.",
    "Walk over to the {c} and look at it.",
    "Head towards the {c} and stop in front of it.",
    "Locate the {c} in this home.",
    "Move until the {c} is centred in view.",
    "Take me to the {c}.",
    "Approach the {c}.",
    "Look for a {c} and face it.",
    "The camera moves through the room. Finally, it focuses on a {c} in the center of the frame.",
    "The camera explores the apartment and ends looking at the {c} in the middle of the view.",
)
POSE_TEMPLATES: tuple[str, ...] = (
    "Follow the camera path.",
    "Move along the given camera trajectory.",
    "Fly the camera along the path.",
)


class DataGenerationError(RuntimeError):
    """The data folder or the environment cannot produce the requested shards."""


@dataclass
class GenConfig:
    """What a data folder was generated with (stored in the manifest; a resumed run must match).

    Args:
        split: env scene split (``train``, ``val_scenes``, ``val_categories``, ``outdoor``).
        height, width: render resolution (default: the model ``default`` config's).
        object_episodes: object-grounding expert episodes per scene.
        pose_episodes: pose-path episodes per scene.
        random_walk_steps: random-action transitions per scene for the IDM.
        max_episode_steps: expert episodes longer than this are cut (and marked unfinished).
        n_instructions: instruction variants stored per episode (env's own + templates).
        max_final_sd: object episodes whose expert stopped with the goal visible within this SD are kept
            even when the env's success rule (SD < 0.2) fails.
        seed: generator seed (per-scene seeds derive from it and the scene index).
    """

    split: str = "train"
    height: int = 64
    width: int = 64
    object_episodes: int = 12
    pose_episodes: int = 4
    random_walk_steps: int = 48
    max_episode_steps: int = 120
    n_instructions: int = 3
    max_final_sd: float = 0.3
    seed: int = 0


def shard_name(index: int) -> str:
    """File name of the shard of scene ``index``."""
    return f"shard_{index:06d}.npz"


def scene_seed(seed: int, index: int) -> int:
    """Per-scene seed from the generator seed (independent streams, stable across worker counts)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def category_words(category: str) -> str:
    """``potted_plant`` -> ``potted plant``."""
    return category.replace("_", " ")


def object_instructions(env_instruction: str, category: str, rng: np.random.Generator, n: int) -> list[str]:
    """The env's own instruction first (what the agent sees at test time), then distinct templates."""
    out = [env_instruction] if env_instruction else []
    picks = rng.permutation(len(OBJECT_TEMPLATES))
    for j in picks:
        if len(out) >= n:
            break
        s = OBJECT_TEMPLATES[j].format(c=category_words(category))
        if s not in out:
            out.append(s)
    return out[:n]


def _box_array(box: Any) -> np.ndarray:
    if box is None:
        return np.full(4, np.nan, dtype=np.float32)
    return np.asarray(box, dtype=np.float32).reshape(4)


# ---------------------------------------------------------------------------------------------- episodes


def _make_env(cfg: GenConfig, task: str, scene):
    """An env fixed on one scene (a ``Scene`` of ``cfg.split``) at the data resolution."""
    from v4s_agent.envs.nav_env import V4SNavEnv

    return V4SNavEnv(task=task, scene=scene, resolution=(cfg.height, cfg.width))


def _run_expert(env, obs: dict, info: dict, max_steps: int) -> dict[str, Any]:
    """Roll the env's shortest-path expert; one stored frame per action."""
    frames, poses, boxes, actions = [obs["rgb"]], [info["agent_pose"]], [_box_array(info.get("goal_box"))], []
    done = False
    success = False
    for _ in range(max_steps):
        a = int(env.unwrapped.expert_action())
        actions.append(a)
        obs, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            success = bool(info.get("is_success", info.get("success", False)))
            done = True
            break
        frames.append(obs["rgb"])
        poses.append(info["agent_pose"])
        boxes.append(_box_array(info.get("goal_box")))
    if len(actions) == len(frames):  # the last action's result is not stored (episode ended on it)
        last_action = actions[-1]
        actions = actions[:-1]
    else:
        last_action = -1
    return {
        "frames": np.stack(frames).astype(np.uint8),
        "poses": np.stack(poses).astype(np.float64),
        "boxes": np.stack(boxes).astype(np.float32),
        "actions": np.asarray(actions + [-1], dtype=np.int64),
        "last_action": last_action,
        "done": done,
        "success": success,
        "info": info,
    }


def generate_scene(cfg: GenConfig, scene_index: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All arrays of one scene's shard and its summary (counts)."""
    from v4s_agent.envs.geometry import encode_relative_pose
    from v4s_agent.envs.scenes import split_scene

    from v4s_agent.model.bbox import draw_red_box

    rng = np.random.default_rng(scene_seed(cfg.seed, scene_index))
    scene = split_scene(cfg.split, scene_index)
    arrays: dict[str, np.ndarray] = {}
    stats = {"obj_failed": 0, "pose_failed": 0}

    # --- object grounding episodes + the tour -----------------------------------------------------
    env = _make_env(cfg, "object", scene)
    try:
        obs, info = env.reset(seed=int(rng.integers(2**31)))
        ctx = env.unwrapped.get_context()
        arrays["tour_frames"] = np.asarray(ctx["frames"], dtype=np.uint8)
        arrays["tour_poses"] = np.asarray(ctx["poses"], dtype=np.float64)
        eps, instrs, cats, box_frames = [], [], [], []
        idm0, idm1, idma = [], [], []
        for e in range(cfg.object_episodes):
            if e > 0:
                obs, info = env.reset(seed=int(rng.integers(2**31)))
            ep = _run_expert(env, obs, info, cfg.max_episode_steps)
            # the expert's 15-degree turns sometimes stop with the goal slightly off centre (SD 0.2-0.3):
            # still a good grounding episode; loops cut by max_episode_steps are not
            sd = float(ep["info"].get("goal_sd", float("nan")))
            ok = ep["success"] or (ep["last_action"] == 0 and np.isfinite(sd) and sd < cfg.max_final_sd)
            if not ok or len(ep["frames"]) < 2:
                stats["obj_failed"] += 1
                continue
            cat = str(info.get("goal_category", ""))
            eps.append(ep)
            cats.append(cat)
            instrs.append(object_instructions(str(info.get("instruction", "")), cat, rng, cfg.n_instructions))
            last_box = ep["boxes"][-1]
            box = None if np.isnan(last_box).any() else tuple(float(v) for v in last_box)
            box_frames.append(draw_red_box(ep["frames"][-1].copy(), box) if box else ep["frames"][-1].copy())
        _pack(arrays, "obj", eps)
        arrays["obj_box_frames"] = (
            np.stack(box_frames) if box_frames else np.zeros((0, cfg.height, cfg.width, 3), np.uint8)
        )
        arrays["obj_category"] = np.asarray(cats, dtype=np.str_)
        arrays["obj_instructions"] = _str_table(instrs, cfg.n_instructions)

        # --- random walk: IDM transitions incl. STOP and collisions --------------------------------
        obs, info = env.reset(seed=int(rng.integers(2**31)))
        prev = obs["rgb"]
        for _ in range(cfg.random_walk_steps):
            a = int(rng.choice(4, p=[0.1, 0.4, 0.25, 0.25]))
            if a == 0:  # STOP ends an episode in the env: the next frame is the same view
                idm0.append(prev[None])
                idm1.append(prev[None])
                idma.append(np.zeros(1, np.int64))
                continue
            obs, _, terminated, truncated, info = env.step(a)
            idm0.append(prev[None])
            idm1.append(obs["rgb"][None])
            idma.append(np.full(1, a, np.int64))
            prev = obs["rgb"]
            if terminated or truncated:
                obs, info = env.reset(seed=int(rng.integers(2**31)))
                prev = obs["rgb"]
    finally:
        env.close()

    # --- pose-path episodes ---------------------------------------------------------------------------
    pose_eps, pose_instrs = [], []
    if cfg.pose_episodes > 0:
        env = _make_env(cfg, "pose", scene)
        try:
            for _ in range(cfg.pose_episodes):
                obs, info = env.reset(seed=int(rng.integers(2**31)))
                ep = _run_expert(env, obs, info, cfg.max_episode_steps)
                if not ep["success"] or len(ep["frames"]) < 2:
                    stats["pose_failed"] += 1
                    continue
                ep["camera"] = np.stack([encode_relative_pose(ep["poses"][0], T) for T in ep["poses"]])
                pose_eps.append(ep)
                env_instr = str(info.get("instruction", ""))
                variants = [env_instr] if env_instr else []
                variants += [t for t in POSE_TEMPLATES if t not in variants]
                pose_instrs.append(variants[: cfg.n_instructions])
        finally:
            env.close()
    _pack(arrays, "pose", pose_eps)
    arrays["pose_camera"] = (
        np.concatenate([e["camera"] for e in pose_eps]).astype(np.float32)
        if pose_eps
        else np.zeros((0, 12), np.float32)
    )
    arrays["pose_instructions"] = _str_table(pose_instrs, cfg.n_instructions)

    empty = np.zeros((0, cfg.height, cfg.width, 3), np.uint8)
    arrays["idm_frame0"] = np.concatenate(idm0).astype(np.uint8) if idm0 else empty
    arrays["idm_frame1"] = np.concatenate(idm1).astype(np.uint8) if idm1 else empty
    arrays["idm_actions"] = np.concatenate(idma).astype(np.int64) if idma else np.zeros(0, np.int64)

    summary = {
        "scene_index": int(scene_index),
        "n_tour": int(len(arrays["tour_frames"])),
        "n_obj": len(eps),
        "n_obj_frames": int(len(arrays["obj_frames"])),
        "n_pose": len(pose_eps),
        "n_pose_frames": int(len(arrays["pose_frames"])),
        "n_idm": int(len(arrays["idm_actions"])),
        "n_idm_expert": int(
            len(arrays["obj_frames"]) - len(eps) + len(arrays["pose_frames"]) - len(pose_eps)
        ),
        **stats,
    }
    return arrays, summary


def _pack(arrays: dict[str, np.ndarray], prefix: str, eps: list[dict[str, Any]]) -> None:
    """Concatenate variable-length episodes with an offsets table."""
    lengths = [len(e["frames"]) for e in eps]
    arrays[f"{prefix}_offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if eps:
        for k in ("frames", "poses", "boxes", "actions"):
            arrays[f"{prefix}_{k}"] = np.concatenate([e[k] for e in eps])
    else:
        arrays[f"{prefix}_frames"] = np.zeros((0, 1, 1, 3), np.uint8)
        arrays[f"{prefix}_poses"] = np.zeros((0, 4, 4))
        arrays[f"{prefix}_boxes"] = np.zeros((0, 4), np.float32)
        arrays[f"{prefix}_actions"] = np.zeros((0,), np.int64)


def _str_table(rows: list[list[str]], n: int) -> np.ndarray:
    """(E, n) unicode array, short rows padded by repeating their first entry."""
    if not rows:
        return np.zeros((0, n), dtype="<U1")
    return np.asarray([(r + [r[0]] * n)[:n] if r else [""] * n for r in rows], dtype=np.str_)


# ---------------------------------------------------------------------------------------------- shard io


def write_shard(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write atomically (tmp file + rename) so a killed run never leaves a half shard behind."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        import errno

        if e.errno == errno.ENOSPC:
            raise DataGenerationError(
                f"disk full while writing {path}: free space on {path.parent} and re-run "
                "(finished shards are kept)"
            ) from e
        raise
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def file_sha256(path: Path) -> str:
    """Checksum stored in the manifest (the loader can verify shards with it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _worker(args: tuple[dict[str, Any], int, str]) -> dict[str, Any]:
    cfg_d, index, out = args
    import torch

    torch.set_num_threads(1)
    cfg = GenConfig(**cfg_d)
    t0 = time.time()
    arrays, summary = generate_scene(cfg, index)
    info = write_shard(Path(out) / shard_name(index), arrays)
    summary.update(info, seconds=round(time.time() - t0, 2))
    (Path(out) / (shard_name(index) + ".json")).write_text(json.dumps(summary))
    return summary


def generate(
    cfg: GenConfig, n_scenes: int, out: str | Path, workers: int = 1, start: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Generate (or finish) ``n_scenes`` shards in ``out`` and write its manifest; returns the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta_file = out / "generator.json"
    meta = {"version": GENERATOR_VERSION, "config": asdict(cfg)}
    if meta_file.exists():
        old = json.loads(meta_file.read_text())
        if old.get("config") != meta["config"] or old.get("version") != GENERATOR_VERSION:
            raise DataGenerationError(
                f"{out} was generated with different settings ({old}); use another --out or the same settings"
            )
    else:
        meta_file.write_text(json.dumps(meta, indent=2))
    indices = list(range(start, start + n_scenes))
    todo = [
        i
        for i in indices
        if not ((out / shard_name(i)).exists() and (out / (shard_name(i) + ".json")).exists())
    ]
    for stale in out.glob("*.tmp*"):
        stale.unlink(missing_ok=True)
    from tqdm import tqdm

    t0 = time.time()
    jobs = [(asdict(cfg), i, str(out)) for i in todo]
    bar = tqdm(
        total=len(indices),
        initial=len(indices) - len(todo),
        desc=f"scenes ({cfg.split})",
        disable=not progress,
        unit="scene",
    )
    if workers <= 1 or len(jobs) <= 1:
        for j in jobs:
            _worker(j)
            bar.update(1)
    else:
        ctx = mp.get_context("spawn")  # GL contexts and forks do not mix
        with ctx.Pool(workers) as pool:
            for _ in pool.imap_unordered(_worker, jobs):
                bar.update(1)
    bar.close()
    manifest = write_manifest(out, cfg, indices)
    manifest["last_run_seconds"] = round(time.time() - t0, 1)
    return manifest


def goal_visibility_stats(out: Path, shards: list[dict[str, Any]]) -> dict[str, Any]:
    """How many object episodes start with the goal out of view: those are the ones that need the context
    (the model cannot see where to go from the first frame alone)."""
    start_out, end_in, n = 0, 0, 0
    for s in shards:
        with np.load(out / s["file"]) as z:
            boxes, off = z["obj_boxes"], z["obj_offsets"]
        for e in range(len(off) - 1):
            if off[e + 1] <= off[e]:
                continue
            n += 1
            start_out += int(np.isnan(boxes[off[e]]).any())
            end_in += int(not np.isnan(boxes[off[e + 1] - 1]).any())
    return {
        "obj_episodes": n,
        "obj_start_goal_out_of_view": start_out,
        "obj_start_goal_out_of_view_frac": round(start_out / n, 4) if n else None,
        "obj_end_goal_in_view": end_in,
    }


def write_manifest(out: Path, cfg: GenConfig, indices: list[int]) -> dict[str, Any]:
    """Collect the per-shard summaries into ``manifest.json`` (counts, seed, version)."""
    shards = []
    for i in indices:
        s = out / (shard_name(i) + ".json")
        if not s.exists():
            raise DataGenerationError(
                f"shard {shard_name(i)} of {out} is missing its summary; re-run to finish it"
            )
        shards.append(json.loads(s.read_text()))
    totals = {
        k: int(sum(s[k] for s in shards))
        for k in (
            "n_tour",
            "n_obj",
            "n_obj_frames",
            "n_pose",
            "n_pose_frames",
            "n_idm",
            "n_idm_expert",
            "obj_failed",
            "pose_failed",
            "bytes",
        )
    }
    manifest = {
        "episode_stats": goal_visibility_stats(out, shards),
        "version": GENERATOR_VERSION,
        "generator_seed": cfg.seed,
        "config": asdict(cfg),
        "n_shards": len(shards),
        "totals": totals,
        "generation_seconds": round(sum(s.get("seconds", 0.0) for s in shards), 1),
        "shards": shards,
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--split", default="train", choices=["train", "val_scenes", "val_categories", "outdoor"])
    p.add_argument("--scenes", type=int, required=True, help="number of scenes (= shards)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--start", type=int, default=0, help="first scene index of the split")
    p.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 2))))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--resolution",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="render resolution (default: the model 'default' config's)",
    )
    p.add_argument("--object-episodes", type=int, default=GenConfig.object_episodes)
    p.add_argument("--pose-episodes", type=int, default=GenConfig.pose_episodes)
    p.add_argument("--random-walk-steps", type=int, default=GenConfig.random_walk_steps)
    p.add_argument("--max-episode-steps", type=int, default=GenConfig.max_episode_steps)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.resolution is None:
        from v4s_agent.model.configuration_model import get_model_config

        m = get_model_config("default")
        a.resolution = (m.height, m.width)
    if a.scenes < 1:
        p.error("--scenes must be >= 1")
    cfg = GenConfig(
        split=a.split,
        height=a.resolution[0],
        width=a.resolution[1],
        object_episodes=a.object_episodes,
        pose_episodes=a.pose_episodes,
        random_walk_steps=a.random_walk_steps,
        max_episode_steps=a.max_episode_steps,
        seed=a.seed,
    )
    try:
        m = generate(cfg, a.scenes, a.out, workers=a.workers, start=a.start, progress=not a.no_progress)
    except DataGenerationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t = m["totals"]
    print(
        f"{m['n_shards']} shards in {a.out}: {t['n_obj']} object episodes ({t['n_obj_frames']} frames), "
        f"{t['n_pose']} pose episodes, {t['n_idm']} + {t['n_idm_expert']} (expert) IDM transitions, "
        f"{t['n_tour']} tour frames, "
        f"{t['bytes'] / 1e6:.1f} MB; {m['last_run_seconds']} s this run"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
