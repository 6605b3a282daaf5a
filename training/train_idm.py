"""Train the inverse-dynamics model (frame pair -> action) on the generated environment transitions.

    python -m v4s_agent.training.train_idm --data data/train --val-data data/val_scenes --output runs/idm

Why augmentation: the IDM reads the planner's *imagined* frames, which are blurrier and noisier than
renders; blur, noise and colour jitter applied identically to both frames of a pair keep the motion cue
while making the classifier tolerant to that drift. Classes are re-weighted because the expert mostly
moves forward.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from v4s_agent.agent.inverse_dynamics import IDMConfig, InverseDynamicsModel

from .config import IDMTrainConfig
from .dataset import DataError, load_idm_transitions


def to_float(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 (N,H,W,3) -> float (N,3,height,width) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float().div_(127.5).sub_(1.0)
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="area")
    return x


def augment(x0: torch.Tensor, x1: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Same random blur / noise / brightness-contrast on both frames of each pair."""
    b = x0.shape[0]
    x = torch.cat([x0, x1], dim=1)  # (B, 6, H, W)
    blur = torch.rand(b, generator=g) < 0.5
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :]) / 16.0
        w = k.view(1, 1, 3, 3).repeat(6, 1, 1, 1)
        xb = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), w, groups=6)
        x = x.clone()
        x[blur] = xb
    gain = 1.0 + 0.2 * (torch.rand(b, 1, 1, 1, generator=g) - 0.5)
    bias = 0.2 * (torch.rand(b, 1, 1, 1, generator=g) - 0.5)
    x = x * gain + bias
    x = x + 0.04 * torch.rand(b, 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
    x = x.clamp(-1, 1)
    return x[:, :3], x[:, 3:]


@torch.no_grad()
def evaluate(
    model: InverseDynamicsModel, f0: np.ndarray, f1: np.ndarray, y: np.ndarray, bs: int = 256
) -> dict:
    """Accuracy overall and per action."""
    model.eval()
    h, w = model.config.height, model.config.width
    pred = []
    for i in range(0, len(y), bs):
        pred.append(model(to_float(f0[i : i + bs], h, w), to_float(f1[i : i + bs], h, w)).argmax(1).numpy())
    model.train()
    p = np.concatenate(pred) if pred else np.zeros(0, np.int64)
    out = {"accuracy": float((p == y).mean()) if len(y) else float("nan"), "n": int(len(y))}
    for a in range(4):
        m = y == a
        out[f"accuracy_a{a}"] = float((p[m] == a).mean()) if m.any() else float("nan")
    return out


def train_idm(
    cfg: IDMTrainConfig,
    output: str | Path,
    val_data: str | Path | None = None,
    max_shards: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and save ``output/idm`` (``save_pretrained``); returns metrics."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "idm_train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    torch.manual_seed(cfg.seed)
    f0, f1, y = load_idm_transitions(cfg.data_dir, max_shards=max_shards, max_per_shard=400, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if val_data is not None:
        v0, v1, vy = load_idm_transitions(val_data, max_per_shard=400, seed=cfg.seed + 1)
    else:  # hold out a fraction of the training transitions
        perm = rng.permutation(len(y))
        nv = max(1, int(len(y) * cfg.val_fraction))
        vi, ti = perm[:nv], perm[nv:]
        v0, v1, vy = f0[vi], f1[vi], y[vi]
        f0, f1, y = f0[ti], f1[ti], y[ti]
    counts = np.bincount(y, minlength=4).astype(np.float64)
    if (counts == 0).any():
        print(
            f"warning: no training transitions for actions {np.nonzero(counts == 0)[0].tolist()}",
            file=sys.stderr,
        )
    weights = 1.0 / np.maximum(counts, 1.0)
    p_sample = weights[y] / weights[y].sum()
    model = InverseDynamicsModel(
        IDMConfig(
            height=cfg.height, width=cfg.width, base_channels=cfg.base_channels, num_stages=cfg.num_stages
        )
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.max_steps, pct_start=0.1)
    writer = SummaryWriter(str(out / "tb_idm"))
    g = torch.Generator().manual_seed(cfg.seed)
    t0 = time.time()
    bar = tqdm(range(cfg.max_steps), desc="idm", disable=not progress, dynamic_ncols=True)
    loss_ema = None
    for step in bar:
        idx = rng.choice(len(y), size=cfg.batch_size, p=p_sample)
        x0, x1 = to_float(f0[idx], cfg.height, cfg.width), to_float(f1[idx], cfg.height, cfg.width)
        if cfg.augment:
            x0, x1 = augment(x0, x1, g)
        loss = F.cross_entropy(model(x0, x1), torch.from_numpy(y[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_ema = float(loss) if loss_ema is None else 0.95 * loss_ema + 0.05 * float(loss)
        bar.set_postfix(loss=f"{loss_ema:.3f}")
        if (step + 1) % 50 == 0:
            writer.add_scalar("idm/loss", loss_ema, step + 1)
    bar.close()
    metrics = {
        "train_transitions": int(len(y)),
        "train_counts": counts.astype(int).tolist(),
        "final_loss": loss_ema,
        "seconds": round(time.time() - t0, 1),
        "val": evaluate(model, v0, v1, vy),
        "steps": cfg.max_steps,
    }
    for k, v in metrics["val"].items():
        if isinstance(v, float):
            writer.add_scalar(f"idm_val/{k}", v, cfg.max_steps)
    writer.close()
    model.eval()
    model.save_pretrained(out / "idm")
    (out / "idm" / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(description="Train the inverse-dynamics model on generated transitions.")
    p.add_argument("--data", required=True)
    p.add_argument("--val-data", default=None, help="held-out data (default: a fraction of --data)")
    p.add_argument("--output", required=True, help="run folder; the model goes to OUTPUT/idm")
    p.add_argument("--max-steps", type=int, default=IDMTrainConfig.max_steps)
    p.add_argument("--batch-size", type=int, default=IDMTrainConfig.batch_size)
    p.add_argument("--resolution", type=int, nargs=2, default=(IDMTrainConfig.height, IDMTrainConfig.width))
    p.add_argument("--base-channels", type=int, default=IDMTrainConfig.base_channels)
    p.add_argument("--max-shards", type=int, default=None, help="use the first N shards only (memory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-threads", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    cfg = IDMTrainConfig(
        data_dir=a.data,
        height=a.resolution[0],
        width=a.resolution[1],
        max_steps=a.max_steps,
        batch_size=a.batch_size,
        base_channels=a.base_channels,
        seed=a.seed,
        num_threads=a.num_threads,
    )
    try:
        m = train_idm(cfg, a.output, val_data=a.val_data, max_shards=a.max_shards, progress=not a.no_progress)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
