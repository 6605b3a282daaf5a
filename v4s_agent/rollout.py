"""``python -m v4s_agent.rollout``: the CLI of :mod:`v4s_agent.evaluation.rollout`, where the code lives."""

from __future__ import annotations

import sys

from .evaluation.rollout import main

if __name__ == "__main__":
    sys.exit(main())
