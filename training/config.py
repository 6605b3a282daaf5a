"""Training configuration: one ``TrainConfig`` dataclass, named presets ``tiny``, ``default``, ``paper``.

Why a plain dataclass: a run must be reproducible from the ``train_config.json`` written into its run
directory alone (``--config-path run/train_config.json``), like LeRobot's ``train_config.json``; presets are
the nanoGPT-style named sizes. The model architecture is the model engineer's ``get_model_config(name)``;
``model_overrides`` is the one documented place where training may change it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

CONFIG_FILE = "train_config.json"


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data.

    Args:
        name: preset name the config came from (informational).
        model_config: name passed to ``v4s_agent.model.configuration_model.get_model_config``.
        model_overrides: fields of the model config replaced for this run (documented deviations only).
        data_dir: folder written by ``generate_data`` (train split).
        seed: global seed; every step's randomness is derived from (seed, rank, step) for exact resume.
        batch_size: samples per process per micro-step.
        grad_accum_steps: micro-steps per optimiser step.
        max_steps: optimiser steps of the run.
        lr, weight_decay, betas, warmup_steps, lr_schedule: AdamW and its schedule ("cosine" | "constant" |
            "wsd": warm-up, constant until ``decay_start``, then linear to ``lr_final_ratio`` x lr over
            ``decay_steps``; why: a run trained at constant lr for as long as sessions allowed can be
            cooled down later without restarting it; "points": the lr multiplier linear between the
            ``lr_points`` ``[step, multiplier]`` pairs, constant beyond them: a re-warm and a second
            decay when the data mix changes on ``--resume``).
        max_grad_norm: gradient clipping (0 = off).
        ema_decay: EMA decay of the shipped weights (ramped as min(decay, (1+step)/(10+step))).
        mixed_precision: "auto" (bf16 on CUDA, fp32 on CPU), "no", "bf16", "fp16".
        checkpoint_every: steps between atomic checkpoints; ``keep_checkpoints`` newest ones are kept.
        log_every: steps between TensorBoard scalar logs.
        sample_every: steps between sample videos (0 = only at the end); ``sample_steps`` sampler steps.
        guidance_scale: joint CFG scale for the sample videos.
        num_workers: DataLoader worker processes (0 = load in the training process: on a 2-core CPU the
            ~15 ms/batch of numpy loading is cheaper than extra processes).
        val_data_dir: held-out data for the sample videos (``None``: a fixed training batch).
        num_threads: torch intra-op threads on CPU (0 = leave torch's default).
        p_drop_cond: probability of the joint CFG dropout (instruction AND context together);
            ``None`` = the model config's ``cfg_dropout``.
        context_mode: "sparse" (sorted random subset of the tour, source-index positions) or
            "contiguous" (a contiguous window, positions 0..K-1) -- the paper's ablation switch.
        pose_task_prob: fraction of samples drawn from pose-path episodes (rest: object grounding).
        end_window_prob: fraction of object clips that end at the visit's end (goal centred).
        near_context_start, near_context_end, near_context_steps: the near-context curriculum: the
            probability that one context frame is the scene video's closest view to the clip's last frame
            goes linearly from ``start`` to ``end`` (the video's natural sampling at 0) over ``steps``
            optimiser steps; ``near_context_frames`` clip frames (the last, then every other one back)
            get their closest view into the context when the draw hits.
        view_context_prob: probability that a pose clip's context is its path's closest views from
            another pass of the scene video (``envs.scene_video.choose_view_context``; the planner's
            context when a path is given, and the gates' ``--context views``) instead of the above.
        goal_context_prob: probability that an object clip's context holds up to ``GOAL_VIEWS`` (six)
            views of its goal centred, from another pass of the video, ranked by ``goal_context_rank``
            (``envs.scene_video.choose_goal_context``; at use time the detector finds them, and so in the
            gates' ``--context views``).
        goal_context_views: at most this many goal views in such a context (``None``: ``GOAL_VIEWS``).
        goal_context_rank: which goal views come first: ``"reach"`` (fewest turn-go-turn actions from the
            observation) or ``"floor"`` (nearest on the floor, the rule up to the step-38,147 planner);
            ``None``: ``envs.scene_video.GOAL_RANK``, the agent's.
        cpu_attention: attention kernel on CPUs: ``"math"`` (matmul + softmax: for our ~400-token
            sequences its bf16 backward is the faster one, ``benchmarks/bench_train.py``) or ``"auto"``
            (torch's own choice, the flash kernel); GPUs always use torch's choice.
        compile: ``torch.compile`` the transformer (inductor): fused elementwise ops and casts around the
            matmuls; the first steps pay the compilation (``bench_train.py --variants math-1-compile``).
        init_from: a checkpoint folder (``.../checkpoints/step_N``), a run folder (its newest checkpoint)
            or a ``save_pretrained`` pipeline folder (e.g. a shipped ``checkpoints/default/pipeline``)
            whose weights and EMA start this NEW run (fresh optimiser, step 0): fine-tuning comparisons
            from one trained model. The model config may differ only where the weights keep their
            shapes (e.g. ``context_pose``); the load is strict.
    """

    name: str = "default"
    model_config: str = "default"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    data_dir: str = "data/train"
    seed: int = 0
    batch_size: int = 4
    grad_accum_steps: int = 1
    max_steps: int = 3000
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    lr_schedule: str = "cosine"
    decay_start: int = 0
    decay_steps: int = 0
    lr_final_ratio: float = 0.1
    lr_points: list[list[float]] = field(default_factory=list)
    max_grad_norm: float = 1.0
    ema_decay: float = 0.999
    mixed_precision: str = "auto"
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 10
    sample_every: int = 0
    sample_steps: int = 10
    guidance_scale: float = 2.0
    num_workers: int = 0
    val_data_dir: str | None = None
    num_threads: int = 0
    p_drop_cond: float | None = None
    context_mode: str = "sparse"
    pose_task_prob: float = 0.3
    end_window_prob: float = 0.5
    near_context_start: float = 0.9
    near_context_end: float = 0.0
    near_context_steps: int = 4000
    near_context_frames: int = 1
    view_context_prob: float = 0.0
    goal_context_prob: float = 0.0
    goal_context_views: int | None = None
    goal_context_rank: str | None = None
    cpu_attention: str = "math"
    compile: bool = False
    init_from: str | None = None

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]  (JSON gives a list)
        if self.context_mode not in ("sparse", "contiguous"):
            raise ValueError(f"context_mode must be 'sparse' or 'contiguous'. Got {self.context_mode!r}")
        if self.cpu_attention not in ("math", "auto"):
            raise ValueError(f"cpu_attention must be 'math' or 'auto'. Got {self.cpu_attention!r}")
        if self.lr_schedule not in ("cosine", "constant", "wsd", "points"):
            raise ValueError(
                f"lr_schedule must be 'cosine', 'constant', 'wsd' or 'points'. Got {self.lr_schedule!r}"
            )
        self.lr_points = [[float(a), float(b)] for a, b in self.lr_points]
        if self.lr_schedule == "points":
            steps = [p[0] for p in self.lr_points]
            if not steps or steps != sorted(steps) or any(p[1] < 0 for p in self.lr_points):
                raise ValueError(
                    "lr_schedule 'points' needs lr_points: [step, multiplier] pairs, steps ascending, "
                    f"multipliers >= 0. Got {self.lr_points}"
                )
        if self.lr_schedule == "wsd" and (self.decay_steps < 1 or self.decay_start < 0):
            raise ValueError(
                f"lr_schedule 'wsd' needs decay_start >= 0 and decay_steps >= 1. "
                f"Got {self.decay_start}, {self.decay_steps}"
            )
        if not 0.0 <= self.lr_final_ratio <= 1.0:
            raise ValueError(f"lr_final_ratio must be in [0, 1]. Got {self.lr_final_ratio}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be auto/no/bf16/fp16. Got {self.mixed_precision!r}")
        for k in ("batch_size", "grad_accum_steps", "max_steps", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1. Got {getattr(self, k)}")
        if self.goal_context_views is not None and self.goal_context_views < 1:
            raise ValueError(f"goal_context_views must be >= 1. Got {self.goal_context_views}")
        from v4s_agent.envs.scene_video import GOAL_RANKS

        if self.goal_context_rank is not None and self.goal_context_rank not in GOAL_RANKS:
            raise ValueError(f"goal_context_rank must be one of {GOAL_RANKS}. Got {self.goal_context_rank!r}")
        if self.near_context_frames < 1:
            raise ValueError(f"near_context_frames must be >= 1. Got {self.near_context_frames}")
        if self.near_context_steps < 0:
            raise ValueError(f"near_context_steps must be >= 0. Got {self.near_context_steps}")
        probs = (
            "p_drop_cond",
            "pose_task_prob",
            "end_window_prob",
            "near_context_start",
            "near_context_end",
            "view_context_prob",
            "goal_context_prob",
        )
        for k in probs:
            if getattr(self, k) is not None and not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"{k} must be in [0, 1]. Got {getattr(self, k)}")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys are an error (a typo must not be silently ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - {"resolved_model_config", "resolved"})
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {unknown}")
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Load a ``.json`` or ``.yaml`` serialised config (e.g. a run directory's ``train_config.json``)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        text = p.read_text()
        if p.suffix in (".yaml", ".yml"):
            import yaml

            d = yaml.safe_load(text)
        else:
            d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError(f"{p} does not hold a mapping of config fields")
        return cls.from_dict(d)

    def replace(self, **kw: Any) -> TrainConfig:
        """Copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **kw)


def _presets() -> dict[str, TrainConfig]:
    return {
        # tests: seconds on a CPU
        "tiny": TrainConfig(
            name="tiny",
            model_config="tiny",
            batch_size=2,
            max_steps=6,
            lr=1e-3,
            warmup_steps=2,
            ema_decay=0.9,
            checkpoint_every=3,
            keep_checkpoints=2,
            log_every=1,
            sample_every=0,
            sample_steps=2,
            num_workers=0,
            p_drop_cond=0.2,
        ),
        # the shipped checkpoint: a long CPU run resumed session after session (see docs/README_training.md);
        # constant LR because the run has no fixed end (--max-minutes ends each session's part of it)
        "default": TrainConfig(
            name="default",
            model_config="default",
            batch_size=4,
            max_steps=200_000,
            lr=5e-4,
            warmup_steps=100,
            lr_schedule="constant",
            ema_decay=0.995,
            checkpoint_every=200,
            keep_checkpoints=2,
            log_every=10,
            sample_every=1000,
            sample_steps=4,
            guidance_scale=1.0,
            num_workers=0,
            # one thread: on a shared 2-core CPU two OpenMP threads stall at every barrier (measured
            # 10-17 s/step vs 1 s/step); bf16 autocast uses the CPU's AVX512-BF16 (~1.8x) and is bf16 on GPUs
            num_threads=1,
            mixed_precision="bf16",
        ),
        # paper scale (Wan2.x backbone from a local path): multi-GPU
        "paper": TrainConfig(
            name="paper",
            model_config="paper",
            batch_size=1,
            grad_accum_steps=8,
            max_steps=20000,
            lr=1e-5,
            warmup_steps=500,
            ema_decay=0.9999,
            checkpoint_every=500,
            keep_checkpoints=3,
            log_every=20,
            sample_every=2000,
            sample_steps=50,
            guidance_scale=5.0,
            num_workers=4,
            mixed_precision="auto",
        ),
    }


PRESETS = tuple(_presets())


def get_train_config(name: str) -> TrainConfig:
    """A fresh copy of a named preset (``tiny`` | ``default`` | ``paper``)."""
    presets = _presets()
    if name not in presets:
        raise ValueError(f"unknown training config {name!r}; choose one of {sorted(presets)}")
    return presets[name]


@dataclass
class IDMTrainConfig:
    """Training of the inverse-dynamics model (small: minutes on a CPU).

    Args:
        data_dir: generated data folder (its shards hold the transitions).
        height, width: IDM input resolution (frames are resized to it).
        base_channels, num_stages: CNN size (see ``IDMConfig``).
        batch_size, max_steps, lr, weight_decay: AdamW training.
        augment: blur/noise augmentation so the IDM also reads blurry generated frames.
        val_fraction: fraction of transitions held out for the accuracy log.
        seed: seed.
        num_threads: torch threads on CPU (0 = default).
    """

    data_dir: str = "data/train"
    height: int = 64
    width: int = 64
    base_channels: int = 32
    num_stages: int = 4
    batch_size: int = 64
    max_steps: int = 1500
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment: bool = True
    val_fraction: float = 0.1
    seed: int = 0
    num_threads: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)
