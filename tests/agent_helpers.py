"""Helpers for the agent/rollout/evaluate tests: a tiny random planner checkpoint and a tiny detector.

Why random weights: the tests check the plumbing (shapes, files, exit codes, determinism), not the
quality of a trained model, so they must not depend on the shipped checkpoint.
"""

from __future__ import annotations

from pathlib import Path


def make_tiny_checkpoint(path: Path, seed: int = 0, **overrides) -> Path:
    """``path/pipeline`` (tiny random Video4SpatialPipeline) + ``path/idm`` (tiny random IDM)."""
    from v4s_agent.agent.inverse_dynamics import IDMConfig, InverseDynamicsModel
    from v4s_agent.model.pipeline_v4s import Video4SpatialPipeline

    pipe = Video4SpatialPipeline.from_config_name("tiny", seed=seed, **overrides)
    pipe.save_pretrained(str(path / "pipeline"))
    InverseDynamicsModel(IDMConfig(height=16, width=16, base_channels=4, num_stages=2)).save_pretrained(
        path / "idm"
    )
    return path


def make_tiny_detector(path: Path, seed: int = 0) -> Path:
    """A barely trained evaluator detector (2 short episodes, 1 epoch) saved to ``path``."""
    from v4s_agent.evaluation.evaluator_detector import collect_frames, train_detector

    imgs, masks, cats = collect_frames(2, seed=seed, max_steps=12, every=3)
    det = train_detector(imgs, masks, cats, epochs=1, width=8, input_size=32, seed=seed)
    det.save_pretrained(path)
    return path
