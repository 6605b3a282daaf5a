"""The old name of :mod:`v4s_agent.training.package` (a training run packaged as a shipped checkpoint
folder): ``python -m v4s_agent.training.export`` and ``from v4s_agent.training.export import export``
keep working."""

from __future__ import annotations

import sys

from .package import (
    MAX_SHARD,
    MAX_TOTAL_MB,
    export,
    folder_mb,
    main,
    package_run,
    plot_loss_curve,
    plot_probe_curves,
)

__all__ = [
    "MAX_SHARD",
    "MAX_TOTAL_MB",
    "export",
    "folder_mb",
    "main",
    "package_run",
    "plot_loss_curve",
    "plot_probe_curves",
]

if __name__ == "__main__":
    sys.exit(main())
