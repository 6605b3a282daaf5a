"""The issue-10 side-by-side table and sample sheet from the candidates' runs and evaluations.

    python launch/experiments/compare/table.py v8 x8 x16 x16k16 x16a x16b
    # -> outputs/compare/README.md and samples.png

Held-out probe columns come from each run's last ``val/*`` record (``training/val_probe.py``); the open-loop
columns from ``outputs/compare/<name>/metrics.json`` (``python -m v4s_agent.evaluate``) where it exists.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np

NAN = float("nan")


def _records(run: Path) -> tuple[dict, dict, dict]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    probes = [r for r in recs if "val/x0_mse_mean" in r]
    train = [r for r in recs if "loss" in r]
    first_probe = probes[0] if probes else {}
    return (probes[-1] if probes else {}), (train[-1] if train else {}), first_probe


def _ci(r: dict | None, key: str, nd: int = 3) -> str:
    if not r or r.get(key) is None:
        return "–"
    v, ci = r[key], r.get("ci95", {}).get(key)
    return f"{v:.{nd}f} [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]" if ci and None not in ci else f"{v:.{nd}f}"


def main(cands: list[str]) -> None:
    out = Path("outputs/compare")
    rows, sheets = [], []
    for c in cands:
        run = Path(f"runs/compare_{c}")
        cfg = json.loads((run / "train_config.json").read_text())["resolved_model_config"]
        probe, train, first = _records(run)
        p = {k: float(v) for k, v in probe.items()}
        model = f"{cfg['prediction_type']} 1×{cfg['patch_size'][1]}×{cfg['patch_size'][2]}"
        if cfg.get("sample_anchor", "none") != "none":
            model += f", skip={cfg['sample_anchor']}"
        model += f", K={cfg['num_context_frames']}"
        sampled = " / ".join(f"{p.get(f'val/sample_mse_{k}', NAN):.3f}" for k in ("ctx", "noctx", "wrongctx"))
        at250 = first.get("val/x0_mse_mean", NAN) if first.get("step") in (217, 218, 250) else NAN
        mfile = out / c / "metrics.json"
        ol = nav = None
        if mfile.is_file():
            m = json.loads(mfile.read_text())
            ol, nav = m["open_loop"]["val_scenes"], m["navigation"]["val_scenes"]
        ours = ol["ours"] if ol else None
        if20 = " | ".join(
            _ci(ol.get(r) if ol else None, "IF(SD<0.2)")
            for r in ("ours", "ours, no context", "ours, another scene's context")
        )
        lat = f"{ours['plan_latency_ms']:.0f}" if ours else "–"
        rows.append(
            f"| {c} | {model} | {train.get('step', '–')} | {train.get('elapsed_s', NAN) / 60:.1f}"
            f" | {at250:.4f} | {p.get('val/x0_mse_mean', NAN):.4f} | {p.get('val/x0_mse@1', NAN):.3f}"
            f" | {sampled}"
            f" | {_ci(nav['ours'] if nav else None, 'PSNR', 2)} | {_ci(ours, 'SD')} | {if20} | {lat} |"
        )
        sheet_png = out / c / "samples_open_loop_val_scenes_ours.png"
        if sheet_png.is_file():
            sheet = imageio.imread(sheet_png)
            bar = np.full((14, sheet.shape[1], 3), 255, np.uint8)
            cv2.putText(bar, c, (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
            sheets.append(np.concatenate([bar, sheet]))
    if sheets:
        w = max(s.shape[1] for s in sheets)
        sheets = [np.pad(s, ((0, 6), (0, w - s.shape[1]), (0, 0)), constant_values=255) for s in sheets]
        imageio.imwrite(out / "samples.png", np.concatenate(sheets))
    head = (
        "| candidate | model | steps | wall min (incl. probes) | held-out x0-MSE at ~250 steps"
        " | x0-MSE (σ grid) at end | x0-MSE at σ=1 | sampled MSE ctx / none / wrong | nav PSNR | SD"
        " | IF(SD<0.2) | IF(SD<0.2) no ctx | IF(SD<0.2) wrong ctx | plan ms |\n" + "|---" * 14 + "|"
    )
    text = "# Side-by-side (issue 10)\n\n" + head + "\n" + "\n".join(rows) + "\n\n![samples](samples.png)\n"
    (out / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
