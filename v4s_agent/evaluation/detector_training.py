"""Training the evaluator detector: class-balanced cross-entropy on augmented renders, and warm starts
from a saved detector grown to a new design."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .detector_network import EvaluatorDetector


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
    bottleneck: int = 4,
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
        else EvaluatorDetector(
            categories,
            input_size=input_size,
            width=width,
            global_context=global_context,
            bottleneck=bottleneck,
        )
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


def _warm_start(
    init: str | Path, global_context: bool, bottleneck: int | None = None, width: int | None = None
) -> EvaluatorDetector:
    """A saved detector to start training from, grown to the requested design: a new global-context
    branch starts with its output layer zeroed (so the start computes what the saved one does); a wider
    bottleneck (or ``width``) keeps the saved weights in the first channels of each grown tensor."""
    old = EvaluatorDetector.from_pretrained(init)
    bottleneck = old.bottleneck if bottleneck is None else int(bottleneck)
    width = old.width if width is None else int(width)
    if width < old.width:
        raise ValueError(f"cannot warm-start a narrower detector (width {width}) from width {old.width}")
    if (old.global_context or not global_context) and bottleneck == old.bottleneck and width == old.width:
        return old.train()
    cfg = {
        **old.config,
        "global_context": global_context or old.global_context,
        "bottleneck": bottleneck,
        "width": width,
    }
    det = EvaluatorDetector(**cfg)
    new_state, old_state = det.state_dict(), old.state_dict()
    if set(old_state) - set(new_state):
        raise ValueError(
            f"cannot warm-start from {init}: unexpected {sorted(set(old_state) - set(new_state))}"
        )
    if not old.global_context and det.context is not None:
        nn.init.zeros_(det.context[-1].weight)
        nn.init.zeros_(det.context[-1].bias)
        new_state = det.state_dict()
    with torch.no_grad():
        for k, v in old_state.items():
            t = new_state[k]
            if t.ndim != v.ndim:
                raise ValueError(f"cannot warm-start from {init}: {k} {tuple(v.shape)} -> {tuple(t.shape)}")
            t[tuple(slice(0, min(a, b)) for a, b in zip(t.shape, v.shape, strict=True))] = v[
                tuple(slice(0, min(a, b)) for a, b in zip(t.shape, v.shape, strict=True))
            ]
    det.load_state_dict(new_state)
    return det.train()
