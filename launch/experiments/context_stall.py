"""Figure: where issue 10 stalls. Open-loop SD on held-out ``val_scenes`` (evaluator detector) with the
true context, no context and another scene's context, for every 50-episode evaluation of the planner,
against its training step; the rendered expert clip and the target as lines::

    python launch/experiments/context_stall.py OUT.png LABEL:STEP:METRICS_JSON [LABEL:STEP:METRICS_JSON ...]

Each METRICS_JSON is the ``metrics.json`` that ``python -m v4s_agent.evaluate ... --baselines
no_context,wrong_context`` wrote. The figure plots what those files hold; it computes nothing new.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROWS = {
    "ours": "true context",
    "ours, no context": "no context",
    "ours, another scene's context": "another scene's",
}
TARGET_SD = 0.11


def load(spec: str) -> tuple[str, int, dict]:
    label, step, path = spec.split(":", 2)
    data = json.loads(Path(path).read_text())
    rows = data["open_loop"]["val_scenes"]
    missing = [k for k in ROWS if k not in rows]
    if missing:
        raise SystemExit(f"{path} lacks {missing}: evaluate with --baselines no_context,wrong_context")
    return label, int(step), rows


def main(out: str, specs: list[str]) -> None:
    runs = [load(s) for s in specs]  # in the order given: one group per evaluation
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(runs) + 2), 4.2))
    for j, (key, name) in enumerate(ROWS.items()):
        xs = [i + (j - 1) * 0.18 for i in range(len(runs))]
        ys = [r[2][key]["SD"] for r in runs]
        lo = [r[2][key]["SD"] - r[2][key]["ci95"]["SD"][0] for r in runs]
        hi = [r[2][key]["ci95"]["SD"][1] - r[2][key]["SD"] for r in runs]
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label=name)
    expert = runs[-1][2]["ground truth (rendered expert)"]["SD"]
    ax.axhline(expert, color="grey", ls="--", lw=1, label=f"rendered expert clip ({expert:.3f})")
    ax.axhline(TARGET_SD, color="red", ls=":", lw=1, label=f"target ({TARGET_SD})")
    ax.set_xticks(range(len(runs)), [f"{label}\nstep {step:,}" for label, step, _ in runs], fontsize=8)
    n = runs[-1][2]["ours"]["n"]
    ax.set(xlabel="evaluated checkpoint", ylabel="open-loop SD (lower is better)", ylim=(0, 0.82),
           title=f"held-out val_scenes, {n} episodes each, 95 % intervals")  # fmt: skip
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])
