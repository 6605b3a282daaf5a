"""Shared tiny data settings for the training tests: two small scenes from the real env."""

from __future__ import annotations

from pathlib import Path

from v4s_agent.training.generate_data import GenConfig, generate

TINY_GEN = GenConfig(split="train", height=32, width=32, random_walk_steps=12)


def tiny_data(base: Path) -> Path:
    """Generate (resumably, so every test module shares one folder) the tiny train shards under ``base``."""
    out = base / "v4s_tiny_train"
    generate(TINY_GEN, 2, out, workers=1, progress=False)
    return out
