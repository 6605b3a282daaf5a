"""Issue 13's ablation table and plot from ONE evaluation run (``bash launch/experiments/ablations/run.sh``).

    python launch/experiments/ablations/table.py outputs/ablations [outputs/ablations_g2]
    # -> outputs/ablations/ablations.md and docs/images/ablations.png

The optional second run scores the reference and the text-only-guidance ablation at a guidance scale
above 1 (``evaluate --guidance 2``): at the shipped scale 1 no null branch is sampled, so the guidance
mechanism only shows through training; with the second run its row uses that evaluation.

For each mechanism the reference (full method) and its ablation are scored on the same held-out episodes,
so each difference comes with a *paired* 95 % interval (per-episode differences; SD over episodes where
both found the goal; IF rates as per-episode 0/1). The paper's numbers are beside ours.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from v4s_agent.evaluation.metrics import mean_interval

REF = "ours"
# mechanism -> (ablation row, metric the paper reports it on, paper value with the mechanism, without)
MECHANISMS = {
    "auxiliary red-box frames": ("ablation: no_aux_box", "IF(SD<0.2)", 0.6486, 0.5401),
    "non-contiguous context, source-index RoPE": ("ablation: contiguous_rope", "SD", 0.1099, 0.3246),
    "joint guidance (context + instruction dropped together)": (
        "ablation: text_only_guidance", "IF(SD<0.2)", None, None
    ),
}  # fmt: skip
LOWER_IS_BETTER = {"SD"}


def _paired(ref: list[float], abl: list[float], metric: str) -> tuple[float, float, float, int]:
    """Mean difference reference - ablation with its 95 % normal interval, and the episodes used."""
    a, b = np.asarray(ref, float), np.asarray(abl, float)
    if metric == "SD":
        ok = ~np.isnan(a) & ~np.isnan(b)
        d = a[ok] - b[ok]
    else:
        thr = {"IF(SD<0.2)": 0.2, "IF(SD<0.1)": 0.1, "IF": math.inf}[metric]

        def hit(x: np.ndarray) -> np.ndarray:
            return ~np.isnan(x) & (np.nan_to_num(x, nan=math.inf) < thr)

        d = hit(a).astype(float) - hit(b).astype(float)
    lo, hi = mean_interval(d.tolist())  # the evaluator's own normal interval of a mean
    return (float(d.mean()) if len(d) else float("nan")), lo, hi, len(d)


def _fmt(r: dict, key: str) -> str:
    v, ci = r.get(key), r.get("ci95", {}).get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else f"{v:.3f}"


def main(out: Path, guided: Path | None = None) -> None:
    m = json.loads((out / "metrics.json").read_text())
    rows = m["open_loop"]["val_scenes"]
    g = json.loads((guided / "metrics.json").read_text()) if guided else None
    g_rows = g["open_loop"]["val_scenes"] if g else {}
    nav = m.get("navigation", {}).get("val_scenes", {})
    names = [REF, *[v[0] for v in MECHANISMS.values()], "ours, no context", "ours, another scene's context"]
    lines = [
        f"Command: `{m['command']}`", "",
        "| row | SD ↓ | IF(SD<0.2) ↑ | IF(SD<0.1) ↑ | IF ↑ | nav PSNR ↑ | n |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for n in names:
        if n not in rows or "error" in rows[n]:
            continue
        r, p = rows[n], nav.get(n, {})
        lines.append(f"| {n} | {_fmt(r, 'SD')} | {_fmt(r, 'IF(SD<0.2)')} | {_fmt(r, 'IF(SD<0.1)')} | "
                     f"{_fmt(r, 'IF')} | {_fmt(p, 'PSNR')} | {r.get('n', '–')} |")  # fmt: skip
    if g:
        head = "| row | SD ↓ | IF(SD<0.2) ↑ | IF(SD<0.1) ↑ | IF ↑ | n |"
        lines += ["", f"At guidance 2: `{g['command']}`", "", head, "|---|---|---|---|---|---|"]
        for n in (REF, MECHANISMS["joint guidance (context + instruction dropped together)"][0]):
            if n in g_rows and "error" not in g_rows[n]:
                r = g_rows[n]
                lines.append(f"| {n} (guidance 2) | {_fmt(r, 'SD')} | {_fmt(r, 'IF(SD<0.2)')} | "
                             f"{_fmt(r, 'IF(SD<0.1)')} | {_fmt(r, 'IF')} | {r.get('n', '–')} |")  # fmt: skip
    lines += [
        "",
        "| mechanism | metric | paper: with → without | ours: with → without "
        "| with − without, paired 95 % interval | same direction as the paper? |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for mech, (abl, metric, p_with, p_without) in MECHANISMS.items():
        src = g_rows if (g and mech.startswith("joint")) else rows
        if abl not in src or "error" in src[abl]:
            lines.append(f"| {mech} | {metric} | – | not evaluated | – | – |")
            continue
        ref_sd, abl_sd = src[REF]["per_episode_sd"], src[abl]["per_episode_sd"]
        d, lo, hi, k = _paired(ref_sd, abl_sd, metric)
        better = -d if metric in LOWER_IS_BETTER else d  # > 0: the mechanism helps
        sig = not (lo <= 0.0 <= hi)
        if p_with is None:
            word = "helps" if better > 0 else "hurts" if better < 0 else "no difference"
            note = " (interval excludes 0)" if sig else " (interval includes 0: no measurable effect)"
            verdict = word + note
            paper = "joint better (no number given in the issue)"
        else:
            paper_better = (p_without - p_with) if metric in LOWER_IS_BETTER else (p_with - p_without)
            same = (better > 0) == (paper_better > 0)
            note = ", interval excludes 0" if sig else ", but the interval includes 0: not measurable here"
            verdict = ("yes" if same else "no") + note
            paper = f"{p_with:.4f} → {p_without:.4f}"
        lines.append(
            f"| {mech}{' (guidance 2)' if src is g_rows else ''} | {metric} | {paper} | "
            f"{src[REF][metric]:.3f} → {src[abl][metric]:.3f} | "
            f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] (n={k}) | {verdict} |"
        )
    (out / "ablations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    shown = [n for n in names[:4] if n in rows and "error" not in rows[n]]
    labels = ["reference (full method)" if n == REF else n.replace("ablation: ", "") for n in shown]
    for ax, key in zip(axes, ("SD", "IF(SD<0.2)", "IF(SD<0.1)"), strict=True):
        vals = [rows[n][key] for n in shown]
        cis = [rows[n]["ci95"][key] for n in shown]
        err = np.array([[v - c[0], c[1] - v] for v, c in zip(vals, cis, strict=True)]).T
        colours = ["#4c72b0"] + ["#dd8452"] * (len(shown) - 1)
        ax.bar(range(len(shown)), vals, yerr=err, capsize=4, color=colours)
        paper = {"SD": 0.1099, "IF(SD<0.2)": 0.6486, "IF(SD<0.1)": 0.4941}[key]
        ax.axhline(paper, ls="--", c="k", lw=1, label="paper (full method)")
        ax.set_xticks(range(len(shown)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(key + (" (lower is better)" if key == "SD" else ""))
        ax.legend(fontsize=7)
    fig.suptitle(f"Ablations on {rows[REF].get('n', '?')} held-out val_scenes episodes (95 % intervals)")
    fig.tight_layout()
    img = Path("docs/images/ablations.png")
    img.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(img, dpi=110)
    print(f"wrote {out / 'ablations.md'} and {img}")


if __name__ == "__main__":
    main(
        Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/ablations"),
        Path(sys.argv[2]) if len(sys.argv) > 2 else None,
    )
