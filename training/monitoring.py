"""What a training run shows while it trains: sample videos (generated above real, EMA weights) and the
held-out probe, to TensorBoard and ``metrics.jsonl``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TrainConfig
from .ema import ema_weights

METRICS = "metrics.jsonl"


def write_gif_summary(writer: Any, tag: str, video: np.ndarray, step: int, fps: int = 4) -> None:
    """TensorBoard video without moviepy: an animated-GIF image summary (what ``add_video`` writes)."""
    import io

    import imageio.v2 as imageio
    from tensorboard.compat.proto.summary_pb2 import Summary

    buf = io.BytesIO()
    imageio.mimsave(buf, list(video), format="GIF", duration=1.0 / fps, loop=0)
    h, w = video.shape[1:3]
    img = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=buf.getvalue())
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=img)]), step)


@torch.no_grad()
def sample_videos(
    pipe: Any, ema: dict[str, torch.Tensor], batch: dict[str, Any], steps: int, scale: float, seed: int
) -> np.ndarray:
    """Generate with the EMA weights (swapped in and back): uint8 ``(B, 2, T, H, W, 3)`` (generated, real)."""
    tr = pipe.transformer
    with ema_weights(pipe, ema):
        ctx = batch["context"]
        obs = (
            ((batch["target"][:, :, 0].permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        )
        outs = []
        for i in range(ctx.shape[0]):
            cam = batch["camera"][i].numpy() if float(batch["camera_mask"][i]) > 0 else None
            prompt = batch["instruction"][i] or "Find the chair."
            g = torch.Generator(device=tr.device).manual_seed(seed + i)
            out = pipe(
                context=ctx[i : i + 1],
                context_positions=batch["context_positions"][i].numpy(),
                observation=obs[i],
                prompt=prompt,
                camera=cam,
                context_camera=batch["context_camera"][i].numpy() if "context_camera" in batch else None,
                num_inference_steps=steps,
                guidance_scale=scale,
                generator=g,
                output_type="np",
            )
            outs.append(out.frames[0])
        gen = np.stack(outs)
        real = ((batch["target"].permute(0, 2, 3, 4, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        return np.stack([gen, real], axis=1)


def _fixed_sample_batch(cfg: TrainConfig, mcfg: Any, p_drop: float) -> dict[str, Any] | None:
    """Two fixed samples (no CFG dropout) for the sample videos: held-out data when given."""
    from .dataset import DataError, make_dataloader

    src = cfg.val_data_dir or cfg.data_dir
    try:
        dl = make_dataloader(
            src,
            mcfg,
            2,
            seed=cfg.seed + 12345,
            p_drop=0.0,
            context_mode=cfg.context_mode,
            pose_task_prob=0.0,
            end_window_prob=1.0,
        )
        return next(iter(dl))
    except DataError as e:
        print(f"warning: no sample videos ({e})", file=sys.stderr)
        return None


def _log_samples(writer, output: Path, pipe, ema, batch, cfg: TrainConfig, step: int) -> None:
    import imageio.v2 as imageio

    vids = sample_videos(pipe, ema, batch, cfg.sample_steps, cfg.guidance_scale, cfg.seed)
    (output / "samples").mkdir(exist_ok=True)
    for i, v in enumerate(vids):
        strip = np.concatenate([v[0], v[1]], axis=1)  # generated above real, per frame
        write_gif_summary(writer, f"samples/{i}", strip, step)
        imageio.mimsave(output / "samples" / f"step_{step:08d}_{i}.gif", list(strip), duration=0.25, loop=0)


def _log_probe(writer, output: Path, pipe, ema, probe, cfg: TrainConfig, step: int) -> None:
    """Held-out diagnostics (``val_probe``) with the EMA weights -> TensorBoard ``val/*`` + metrics.jsonl."""
    from .val_probe import run_probe

    t0 = time.time()
    with ema_weights(pipe, ema):
        vals = run_probe(pipe, probe, cfg.sample_steps, cfg.guidance_scale, seed=cfg.seed)
    for k, v in vals.items():
        writer.add_scalar(f"val/{k}", v, step)
    rec = {
        "step": step,
        "probe_seconds": round(time.time() - t0, 2),
        **{f"val/{k}": v for k, v in vals.items()},
    }
    with open(output / METRICS, "a") as f:
        f.write(json.dumps(rec) + "\n")
