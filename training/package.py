"""Package a training run as a shipped checkpoint folder: ``pipeline/`` (EMA weights, ``save_pretrained``,
sharded under 16 MB per file) + ``idm/`` + the loss-curve PNG for the model card.

    python -m v4s_agent.training.package --run runs/default --idm runs/idm/idm \
        --out v4s_agent/checkpoints/default

Why a separate step: the run directory holds optimiser state and several checkpoints (hundreds of MB);
the package ships only what ``VideoPlanner.from_pretrained()`` loads, and checks its size budget.
(``python -m v4s_agent.training.export``, this module's old name, still works.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

MAX_SHARD = "15MB"
MAX_TOTAL_MB = 40.0


def plot_loss_curve(metrics_file: str | Path, out_png: str | Path, title: str = "") -> dict[str, Any]:
    """Training loss (raw and smoothed; trajectory vs box frames) against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    recs = [json.loads(x) for x in Path(metrics_file).read_text().splitlines() if x]
    recs = [r for r in recs if "loss" in r]  # the held-out probe's records are plotted separately
    if not recs:
        raise ValueError(f"{metrics_file} holds no records")
    step = np.array([r["step"] for r in recs])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    for key, lab in (("loss", "loss"), ("loss_traj", "trajectory frames"), ("loss_box", "red-box frames")):
        y = np.array([r.get(key, np.nan) for r in recs], dtype=float)
        k = max(1, len(y) // 30)
        sm = np.convolve(np.nan_to_num(y, nan=np.nanmean(y)), np.ones(k) / k, mode="valid")
        if key == "loss":
            ax.plot(step, y, color="0.8", lw=0.8, label="loss (per log step)")
        ax.plot(step[k - 1 :], sm, lw=1.6, label=f"{lab} (smoothed)")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("flow-matching MSE")
    ax.set_title(title or "training loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.plot(step, [r.get("lr", np.nan) for r in recs], label="learning rate")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("lr")
    ax2 = ax.twinx()
    ax2.plot(
        step, [r.get("samples_per_s", np.nan) for r in recs], color="tab:orange", lw=0.7, label="samples/s"
    )
    ax2.set_ylabel("samples/s")
    ax.set_title("schedule and throughput")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    last = recs[-1]
    tail = [r["loss"] for r in recs[-max(1, len(recs) // 20) :]]
    return {
        "steps": int(last["step"]),
        "final_loss": float(np.mean(tail)),
        "first_loss": float(recs[0]["loss"]),
        "elapsed_s": float(last.get("elapsed_s", float("nan"))),
    }


def plot_probe_curves(metrics_file: str | Path, out_png: str | Path) -> dict[str, Any] | None:
    """The held-out probe against step: one-step denoising error per noise level (left), sampled-video
    error with the true, no and another scene's context (middle: the context-use curve) and, where logged,
    the one-step context gain (right). ``None`` without probe records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(x) for x in Path(metrics_file).read_text().splitlines() if x]
    recs = [r for r in recs if "val/x0_mse_mean" in r]
    if not recs:
        return None
    step = [r["step"] for r in recs]
    gain = [r for r in recs if "val/x0_context_gain" in r]
    fig, axes = plt.subplots(1, 3 if gain else 2, figsize=(15 if gain else 10, 3.6))
    sig_keys = sorted((k for k in recs[-1] if k.startswith("val/x0_mse@")), key=lambda k: float(k[11:]))
    for k in sig_keys:
        axes[0].plot(step, [r.get(k) for r in recs], marker=".", label=f"σ = {k[11:]}")
    axes[0].set_title("held-out one-step x0 error per noise level")
    axes[0].set_xlabel("optimiser step")
    axes[0].set_ylabel("MSE ([-1, 1] pixels)")
    axes[0].legend(fontsize=6, ncol=2)
    for k, lab in (("ctx", "true context"), ("noctx", "no context"), ("wrongctx", "another scene's context")):
        axes[1].plot(step, [r.get(f"val/sample_mse_{k}") for r in recs], marker=".", label=lab)
    axes[1].set_title("held-out sampled-video error (context use)")
    axes[1].set_xlabel("optimiser step")
    axes[1].set_ylabel("MSE ([-1, 1] pixels)")
    axes[1].legend(fontsize=7)
    if gain:  # one step, no sampler drift: how much worse another scene's context makes the estimate
        gs = [r["step"] for r in gain]
        fracs = [k for k in ("val/x0_context_gain_frac_pose@1", "val/x0_context_gain_frac_obj@1",
                             "val/x0_context_gain_frac_pose@0.9", "val/x0_context_gain_frac_pose@0.8",
                             "val/x0_context_gain_frac_views_pose@1", "val/x0_context_gain_frac_views_obj@1")
                 if k in gain[-1]]  # fmt: skip
        for k in fracs:  # the use-time (views) rows start where the probe began to log them
            label = k[4:].replace("x0_context_gain_", "")
            has = [r for r in gain if k in r]
            axes[2].plot([r["step"] for r in has], [r[k] for r in has], marker=".", label=label)
        if fracs:
            axes[2].axhline(0.25, c="r", lw=0.8, ls="--", label="G1 gate (pose, σ = 1)")
            axes[2].set_ylabel("(wrong − true) / true, one-step error")
            axes[2].legend(fontsize=6)
        else:
            axes[2].plot(gs, [r["val/x0_context_gain"] for r in gain], marker=".")
            axes[2].set_ylabel("Δ MSE, mean over σ")
        axes[2].axhline(0.0, c="k", lw=0.8)
        axes[2].set_title("one-step context gain (> 0: the context is used)")
        axes[2].set_xlabel("optimiser step")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    last = recs[-1]
    vals = {k: round(float(v), 4) for k, v in last.items() if k.startswith("val/")}
    return {"probe_step": last["step"], **vals}


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def package_run(run: str | Path, out: str | Path, idm: str | Path | None = None) -> dict[str, Any]:
    """Write ``out/pipeline`` (EMA), ``out/idm`` and ``out/loss_curve.png``; returns facts for the card."""
    from v4s_agent.model.pipeline_v4s import Video4SpatialPipeline

    from .checkpoints import export_checkpoint, latest_checkpoint

    run, out = Path(run), Path(out)
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {run}")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".pipeline_tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    export_checkpoint(run, tmp, ckpt)
    # re-save sharded (git-friendly files) and verify it loads
    pipe = Video4SpatialPipeline.from_pretrained(str(tmp))
    shutil.rmtree(out / "pipeline", ignore_errors=True)
    pipe.save_pretrained(str(out / "pipeline"), max_shard_size=MAX_SHARD)
    shutil.rmtree(tmp, ignore_errors=True)
    Video4SpatialPipeline.from_pretrained(str(out / "pipeline"))
    if idm is not None:
        shutil.rmtree(out / "idm", ignore_errors=True)
        shutil.copytree(idm, out / "idm")
    facts = plot_loss_curve(run / "metrics.jsonl", out / "loss_curve.png", f"{run.name}: training loss")
    probe = plot_probe_curves(run / "metrics.jsonl", out / "probe_curves.png")
    if probe is not None:
        facts["last_probe"] = probe
    facts.update(checkpoint=str(ckpt), size_mb=round(folder_mb(out), 2))
    biggest = max((f.stat().st_size for f in out.rglob("*") if f.is_file()), default=0) / 1e6
    facts["largest_file_mb"] = round(biggest, 2)
    if facts["size_mb"] > MAX_TOTAL_MB:
        print(f"warning: {out} is {facts['size_mb']} MB (> {MAX_TOTAL_MB} MB budget)", file=sys.stderr)
    return facts


export = package_run  # the name before this module was renamed from ``export``


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(description="Package a training run as a shipped checkpoint folder.")
    p.add_argument("--run", required=True, help="training run directory")
    p.add_argument(
        "--out", required=True, help="checkpoint folder to write (pipeline/, idm/, loss_curve.png)"
    )
    p.add_argument("--idm", default=None, help="an inverse-dynamics model folder (train_idm's OUTPUT/idm)")
    a = p.parse_args(argv)
    try:
        facts = package_run(a.run, a.out, a.idm)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(facts, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
