"""Inverse-dynamics model (UniPi-style): which discrete action turned frame t into frame t+1.

The planner imagines a video; this small CNN reads it back as env actions. It is trained on environment
transitions by ``v4s_agent.training.train_idm``. Saved as ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class IDMConfig:
    """Hyperparameters of the inverse-dynamics CNN.

    Args:
        height: input frame height the model was trained at (callers resize to it).
        width: input frame width.
        base_channels: channels of the first conv stage (doubled at each of ``num_stages`` stages).
        num_stages: stride-2 conv stages.
        num_actions: 4 (Habitat order: stop, move_forward, turn_left, turn_right).
        dropout: dropout before the classifier.
    """

    height: int = 64
    width: int = 64
    base_channels: int = 32
    num_stages: int = 4
    num_actions: int = 4
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise ValueError(f"IDM input must be at least 8x8 pixels. Got {self.height}x{self.width}")
        if self.num_stages < 1 or self.base_channels < 1:
            raise ValueError(
                f"num_stages and base_channels must be >= 1. Got {self.num_stages}, {self.base_channels}"
            )


class InverseDynamicsModel(nn.Module):
    """Frame pair ``(B,3,H,W) x 2`` in [-1, 1] -> action logits ``(B, 4)``.

    Why this shape: the two frames and their difference are stacked on channels (9 in), so motion cues
    (parallax for forward, global shift for turns, none for stop/collision) are visible to the first conv.
    """

    def __init__(self, config: IDMConfig | None = None, **kwargs) -> None:
        super().__init__()
        if config is None:
            config = IDMConfig(**kwargs)
        elif kwargs:
            raise ValueError(f"pass either a config or keyword arguments, not both. Got {sorted(kwargs)}")
        self.config = config
        layers: list[nn.Module] = []
        c_in, c = 9, config.base_channels
        for _ in range(config.num_stages):
            layers += [
                nn.Conv2d(c_in, c, 3, stride=2, padding=1),
                nn.GroupNorm(min(8, c), c),
                nn.SiLU(),
                nn.Conv2d(c, c, 3, padding=1),
                nn.GroupNorm(min(8, c), c),
                nn.SiLU(),
            ]
            c_in, c = c, c * 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(c_in * 4, 128),
            nn.SiLU(),
            nn.Linear(128, config.num_actions),
        )

    def forward(self, frame_t: torch.Tensor, frame_t1: torch.Tensor) -> torch.Tensor:
        """Action logits for the transition ``frame_t -> frame_t1`` (both float (B,3,H,W) in [-1, 1])."""
        if frame_t.shape != frame_t1.shape or frame_t.ndim != 4 or frame_t.shape[1] != 3:
            raise ValueError(
                f"expected two (B,3,H,W) tensors of the same shape. Got {tuple(frame_t.shape)}, "
                f"{tuple(frame_t1.shape)}"
            )
        x = torch.cat([frame_t, frame_t1, frame_t1 - frame_t], dim=1)
        h = self.features(x)
        # 2x2 adaptive pooling keeps coarse left/right layout (turn direction) instead of a global mean
        h = F.adaptive_avg_pool2d(h, 2).flatten(1)
        return self.head(h)

    # ----------------------------------------------------------------- save / load
    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write ``config.json`` + ``model.safetensors`` (one unsharded file)."""
        from safetensors.torch import save_model

        d = Path(save_directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / CONFIG_NAME).write_text(json.dumps({"model_type": "v4s_idm", **asdict(self.config)}, indent=2))
        save_model(self, str(d / WEIGHTS_NAME))
        from ..integrity import write_checksums

        write_checksums(d, [CONFIG_NAME, WEIGHTS_NAME])  # verified by from_pretrained

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> InverseDynamicsModel:
        """Load a folder written by ``save_pretrained``; the model comes back in ``.eval()`` mode."""
        from safetensors.torch import load_model

        d = Path(path)
        cfg_file, w_file = d / CONFIG_NAME, d / WEIGHTS_NAME
        if not cfg_file.is_file() or not w_file.is_file():
            raise FileNotFoundError(
                f"{d} is not an inverse-dynamics checkpoint: need {CONFIG_NAME} and {WEIGHTS_NAME}"
            )
        from ..integrity import verify_checksums, verify_safetensors

        verify_checksums(d)  # IntegrityError (a ValueError) naming a corrupt file
        verify_safetensors(w_file)
        raw = json.loads(cfg_file.read_text())
        if raw.get("model_type", "v4s_idm") != "v4s_idm":
            raise ValueError(f"{cfg_file} describes a {raw.get('model_type')!r} model, not 'v4s_idm'")
        known = {f.name for f in fields(IDMConfig)}
        model = cls(IDMConfig(**{k: v for k, v in raw.items() if k in known}))
        load_model(model, str(w_file), strict=True, device=str(device))
        return model.to(device).eval()
