"""Training data from the environment: one streaming shard per scene, cut from the scene's video.

Why one shard per scene: Video4Spatial's training clips and its context come from the same capture of a
scene. Each scene has one continuous, dense camera video (``v4s_agent.envs.scene_video``: the env's expert
walks from object to object, every visit ends with the object centred, a 360-degree look-around follows
each visit), and the dataset cuts object clips (segments ending a visit), pose clips (any segment with its
camera path) and the non-contiguous context (frames of the rest of the same video) from it. A scene is the
natural unit of work, of resumption (a finished shard is never redone) and of per-rank sharding.

A shard ``shard_XXXXXX.npz`` holds (frames uint8 ``(H, W, 3)``, poses float64 4x4 ``T_wc``):

* ``video_frames (N,H,W,3)``, ``video_poses (N,4,4)``, ``video_actions (N,)`` (the action after each
  frame, -1 after the last), ``video_boxes (N,C,4)`` (each category's box per frame, NaN when not in
  view), ``categories (C,)``;
* one row per visit: ``visit_category``, ``visit_start``, ``visit_end`` (the frame that ends the approach,
  goal centred), ``visit_sd``, ``visit_ok`` (SD < 0.2 within 1 m), ``visit_instructions (V, n_instr)``
  (the env's instruction plus varied templates);
* inverse-dynamics transitions: the video's own (frame i, frame i+1, action i) are read from it;
  ``idm_frame0 (M,H,W,3)``, ``idm_frame1``, ``idm_actions (M,)`` add a random walk (STOP and collisions).

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
#: bilinear in the nearest mip level (``renderer_gl.MIN_FILTER``; 49.6 dB at worst from 1.1 at 128²);
#: 2.0: one scene video per scene, clips and context cut from it (no separate tour and episodes);
#: 2.1: every scene video has exactly 720 frames (more rounds of visits, then look-arounds)
GENERATOR_VERSION = "2.1"
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
        random_walk_steps: random-action transitions per scene for the IDM (STOP and collisions).
        n_instructions: instruction variants stored per visit (env's own + templates).
        seed: generator seed (per-scene seeds derive from it and the scene index).

    The scene video itself is the env's (``SceneVideoConfig`` defaults), so training and use match.
    """

    split: str = "train"
    height: int = 64
    width: int = 64
    random_walk_steps: int = 48
    n_instructions: int = 3
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


# ---------------------------------------------------------------------------------------------- episodes


def _make_env(cfg: GenConfig, scene):
    """An object-task env fixed on one scene (a ``Scene`` of ``cfg.split``) at the data resolution."""
    from v4s_agent.envs.nav_env import V4SNavEnv

    return V4SNavEnv(task="object", scene=scene, resolution=(cfg.height, cfg.width), render_mode=None,
                     cache_dir=False)  # fmt: skip


def generate_scene(cfg: GenConfig, scene_index: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All arrays of one scene's shard and its summary (counts)."""
    from v4s_agent.envs.nav_env import instruction_for
    from v4s_agent.envs.scenes import split_scene

    rng = np.random.default_rng(scene_seed(cfg.seed, scene_index))
    scene = split_scene(cfg.split, scene_index)
    arrays: dict[str, np.ndarray] = {}
    env = _make_env(cfg, scene)
    idm0, idm1, idma = [], [], []
    try:
        obs, info = env.reset(seed=int(rng.integers(2**31)))
        video = env.get_scene_video()
        for k, v in video.items():
            arrays[k if k.startswith("visit_") or k == "categories" else f"video_{k}"] = np.array(v)
        cats = [str(c) for c in video["categories"]]
        instrs = [
            object_instructions(instruction_for(cats[c]), cats[c], rng, cfg.n_instructions)
            for c in video["visit_category"].tolist()
        ]
        arrays["visit_instructions"] = _str_table(instrs, cfg.n_instructions)

        # --- random walk: IDM transitions incl. STOP and collisions --------------------------------
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

    empty = np.zeros((0, cfg.height, cfg.width, 3), np.uint8)
    arrays["idm_frame0"] = np.concatenate(idm0).astype(np.uint8) if idm0 else empty
    arrays["idm_frame1"] = np.concatenate(idm1).astype(np.uint8) if idm1 else empty
    arrays["idm_actions"] = np.concatenate(idma).astype(np.int64) if idma else np.zeros(0, np.int64)
    ok = arrays["visit_ok"]
    summary = {
        "scene_index": int(scene_index),
        "n_video": int(len(arrays["video_frames"])),
        "n_visits": int(len(ok)),
        "n_visits_ok": int(ok.sum()),
        "n_idm": int(len(arrays["idm_actions"])),
        "n_idm_video": int((arrays["video_actions"] >= 0).sum()),
    }
    return arrays, summary


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

    def finished(i: int) -> bool:  # shard + summary there, and the shard matches its recorded sha256
        shard, summary = out / shard_name(i), out / (shard_name(i) + ".json")
        if not (shard.exists() and summary.exists()):
            return False
        try:
            ok = json.loads(summary.read_text()).get("sha256") == file_sha256(shard)
        except (OSError, ValueError, AttributeError):
            ok = False
        if not ok:
            print(f"warning: {shard} does not match its recorded sha256 (corrupt): generating it again",
                  file=sys.stderr)  # fmt: skip
        return ok

    todo = [i for i in indices if not finished(i)]
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


def visit_stats(out: Path, shards: list[dict[str, Any]]) -> dict[str, Any]:
    """How the visits end: the share whose end frame centres the goal (SD < 0.2), the mean end SD."""
    n = sum(int(s["n_visits"]) for s in shards)
    ok = sum(int(s["n_visits_ok"]) for s in shards)
    return {"visits": n, "visits_ok": ok, "visits_ok_frac": round(ok / n, 4) if n else None}


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
        for k in ("n_video", "n_visits", "n_visits_ok", "n_idm", "n_idm_video", "bytes")
    }
    manifest = {
        "visit_stats": visit_stats(out, shards),
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
    p.add_argument("--random-walk-steps", type=int, default=GenConfig.random_walk_steps)
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
        random_walk_steps=a.random_walk_steps,
        seed=a.seed,
    )
    try:
        m = generate(cfg, a.scenes, a.out, workers=a.workers, start=a.start, progress=not a.no_progress)
    except DataGenerationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t = m["totals"]
    print(
        f"{m['n_shards']} shards in {a.out}: {t['n_video']} video frames, {t['n_visits']} visits "
        f"({t['n_visits_ok']} end centred), {t['n_idm']} + {t['n_idm_video']} (video) IDM transitions, "
        f"{t['bytes'] / 1e6:.1f} MB; {m['last_run_seconds']} s this run"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
