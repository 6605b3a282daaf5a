"""``python -m v4s_agent.evaluate``: the CLI of :mod:`v4s_agent.evaluation.evaluate`, where the code lives."""

from __future__ import annotations

import sys

from .evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
