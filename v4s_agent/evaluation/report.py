"""The evaluation's report: the results tables (``results.md``), the sample sheets and the plots.

Ours are shown beside the paper's figures (``PAPER``) and the project's targets (``TARGETS``), labelled:
different data, different scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PAPER = {"SD": 0.1099, "IF(SD<0.2)": 0.6486, "IF(SD<0.1)": 0.4941, "nav_PSNR": 14.27, "nav_LPIPS": 0.4674}
TARGETS = {"success_rate": 0.8, "spl": 0.6, "IF(SD<0.2)": 0.65, "SD": 0.11}


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _fmt_ci(v: Any, ci: Sequence[float] | None, nd: int = 3) -> str:
    """``value [lo, hi]`` (95 % interval) or just the value when there is no interval."""
    if ci is None or any(c is None or math.isnan(c) for c in ci):
        return _fmt(v, nd)
    return f"{_fmt(v, nd)} [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]"


def _table(
    title: str,
    columns: Sequence[str],
    results: dict[str, dict[str, dict[str, Any]]],
    cells: Callable[[str, dict[str, Any]], list[tuple[str, list[str]]]],
) -> list[str]:
    """One results section: ``| split | <columns> |``, the rows ``cells`` makes for each (split, row),
    and a "not run" line for a row that failed (its ``error``)."""
    out = [title, "| split | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for split, rows in results.items():
        for row, r in rows.items():
            if "error" in r:
                out.append(f"| {split} | {row} | not run: {r['error']} |" + " |" * (len(columns) - 2))
                continue
            out.extend(f"| {split} | {name} | " + " | ".join(c) + " |" for name, c in cells(row, r))
    return out


def markdown_report(m: dict[str, Any]) -> str:
    """The results tables (ours beside the paper's, labelled)."""
    lines = [
        f"# video4spatial evaluation\n\ncommand: `{m['command']}`  \ncheckpoint: `{m['checkpoint']}`; "
        f"{m['episodes_per_split']} episodes per split; seed {m['seed']}; {m['wall_s']} s wall\n"
    ]
    det = m.get("detector", {})
    if det:
        v = det.get("validation", {})
        lines.append(
            f"Evaluator detector (`{det.get('path')}`): on held-out rendered frames IF precision "
            f"{_fmt(v.get('if_precision'))}, recall {_fmt(v.get('if_recall'))}, "
            f"|SD error| {_fmt(v.get('sd_abs_error'))}.\n"
        )
    if m.get("open_loop"):

        def grounding(row: str, r: dict[str, Any]) -> list[tuple[str, list[str]]]:
            out = []
            for name, rr in ((row, r), ("ground truth (exact semantic render)", r.get("exact_semantic"))):
                if rr is not None:
                    ci = rr.get("ci95", {})
                    keys = ("SD", "IF", "IF(SD<0.2)", "IF(SD<0.1)")
                    out.append((name, [_fmt_ci(rr[k], ci.get(k)) for k in keys] + [str(rr["n"])]))
            return out

        lines += _table(
            "## Open loop: object grounding (evaluator detector on the last imagined frame)\n",
            ["row", "SD ↓", "IF ↑", "IF(SD<0.2) ↑", "IF(SD<0.1) ↑", "n"],
            m["open_loop"],
            grounding,
        )
        lines.append(
            f"| paper (real scans, 416×256, Wan2.2-5B scale) | ours | {PAPER['SD']} | – | "
            f"{PAPER['IF(SD<0.2)']} | {PAPER['IF(SD<0.1)']} | – |\n"
        )
    if m.get("navigation"):

        def navigation(row: str, r: dict[str, Any]) -> list[tuple[str, list[str]]]:
            ci = r.get("ci95", {})
            psnr, ssim = _fmt_ci(r["PSNR"], ci.get("PSNR"), 2), _fmt_ci(r["SSIM"], ci.get("SSIM"))
            return [(row, [psnr, ssim, str(r["n"])])]

        lines += _table(
            "## Open loop: navigation (imagined vs rendered along the same path)\n",
            ["row", "PSNR ↑", "SSIM ↑", "n"],
            m["navigation"],
            navigation,
        )
        lines.append(
            f"| paper (real scans) | ours | {PAPER['nav_PSNR']} | – (LPIPS {PAPER['nav_LPIPS']}) | – |\n"
        )
    if m.get("closed_loop"):

        def closed(row: str, r: dict[str, Any]) -> list[tuple[str, list[str]]]:
            ci = r.get("ci95", {})
            outcomes = " / ".join(str(v) for v in r["outcomes"].values()) if "outcomes" in r else "–"
            return [
                (
                    row,
                    [
                        _fmt_ci(r["success_rate"], ci.get("success_rate")),
                        _fmt_ci(r["spl"], ci.get("spl")),
                        _fmt(r["mean_final_sd"]),
                        _fmt(r["collisions_per_episode"], 2),
                        _fmt(r["plan_latency_ms"], 0),
                        str(r["episodes"]),
                        outcomes,
                    ],
                )
            ]

        lines += _table(
            "## Closed loop\n",
            [
                "agent",
                "success ↑",
                "SPL ↑",
                "final SD ↓",
                "collisions/ep",
                "plan latency ms",
                "n",
                "success / stopped short / stuck / wandered",
            ],  # fmt: skip
            m["closed_loop"],
            closed,
        )
    if m.get("not_run"):
        lines.append("\n## Rows not run\n")
        lines.extend(f"- {x}" for x in m["not_run"])
    lines.append(
        "\nDifferent data, different scale: the paper's numbers are on real indoor scans with a Wan2.2-5B "
        "backbone at 416×256 and 337 context frames; ours are on procedural scenes with the small CPU "
        "model. They are shown side by side for orientation, not as a like-for-like comparison.\n"
    )
    return "\n".join(lines)


def sample_sheet(pairs: Sequence[tuple[np.ndarray, np.ndarray]], pad: int = 2) -> np.ndarray:
    """One PNG-ready uint8 image: per episode, the imagined frames above the real ones (white gaps)."""
    rows = []
    for gen, real in pairs:
        t = max(len(gen), len(real))
        h, w = gen.shape[1:3]
        blank = np.full((h, w, 3), 255, np.uint8)

        def strip(frames: np.ndarray, t: int = t, blank: np.ndarray = blank) -> np.ndarray:
            cells = [frames[i] if i < len(frames) else blank for i in range(t)]
            gap = np.full((blank.shape[0], pad, 3), 255, np.uint8)
            return np.concatenate([c for f in cells for c in (f, gap)][:-1], axis=1)

        rows += [strip(gen), np.full((pad, strip(gen).shape[1], 3), 255, np.uint8), strip(real)]
        rows.append(np.full((3 * pad, rows[-1].shape[1], 3), 255, np.uint8))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows[:-1], axis=0)


def write_sheets(m: dict[str, Any], out: Path) -> list[str]:
    """``samples_<section>_<split>_<row>.png`` for every open-loop row; pops the frames out of ``m``."""
    import re

    import imageio.v2 as imageio

    files = []
    for section in ("open_loop", "navigation"):
        for split, rows in m.get(section, {}).items():
            for row, r in rows.items():
                pairs = r.pop("_sheet", None) if isinstance(r, dict) else None
                if not pairs:
                    continue
                name = re.sub(r"[^a-z0-9]+", "_", f"samples_{section}_{split}_{row}".lower()).strip("_")
                imageio.imwrite(out / f"{name}.png", sample_sheet(pairs))
                files.append(f"{name}.png")
    return files


def make_plots(m: dict[str, Any], out: Path) -> list[str]:
    """Bar charts of IF(SD<0.2)/SD per row and closed-loop success/SPL per agent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    ol = m.get("open_loop", {})
    if ol:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        labels, ifs, sds = [], [], []
        for split, rows in ol.items():
            for row, r in rows.items():
                if "error" not in r:
                    labels.append(f"{split}\n{row}")
                    ifs.append(r["IF(SD<0.2)"])
                    sds.append(r["SD"] if not math.isnan(r["SD"]) else 0.0)
        x = np.arange(len(labels))
        axes[0].bar(x, ifs, color="tab:blue")
        axes[0].axhline(PAPER["IF(SD<0.2)"], color="k", ls="--", lw=1, label="paper")
        axes[0].set_title("IF(SD<0.2) ↑")
        axes[1].bar(x, sds, color="tab:orange")
        axes[1].axhline(PAPER["SD"], color="k", ls="--", lw=1, label="paper")
        axes[1].set_title("SD ↓")
        for ax in axes:
            ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "open_loop.png", dpi=110)
        plt.close(fig)
        files.append("open_loop.png")
    cl = m.get("closed_loop", {})
    if cl:
        fig, ax = plt.subplots(figsize=(9, 3.8))
        labels, sr, spl = [], [], []
        for split, rows in cl.items():
            for row, r in rows.items():
                if "error" not in r:
                    labels.append(f"{split}\n{row}")
                    sr.append(r["success_rate"])
                    spl.append(r["spl"])
        x = np.arange(len(labels))
        ax.bar(x - 0.2, sr, 0.4, label="success")
        ax.bar(x + 0.2, spl, 0.4, label="SPL")
        ax.axhline(TARGETS["success_rate"], color="tab:blue", ls="--", lw=1)
        ax.axhline(TARGETS["spl"], color="tab:orange", ls="--", lw=1)
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
        ax.set_title("closed loop (dashed: targets)")
        fig.tight_layout()
        fig.savefig(out / "closed_loop.png", dpi=110)
        plt.close(fig)
        files.append("closed_loop.png")
    return files
