"""The issue-10 side-by-side table and sample sheet from the candidates' runs and evaluations.

python launch/compare/table.py v8 x8 x16 x16k16      # -> outputs/compare/README.md + samples.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np


def _last_probe(run: Path) -> dict:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    probes = [r for r in recs if "val/x0_mse_mean" in r]
    train = [r for r in recs if "loss" in r]
    return {"probe": probes[-1] if probes else {}, "train": train[-1] if train else {}}


def _ci(r: dict, key: str, nd: int = 3) -> str:
    v = r.get(key)
    ci = r.get("ci95", {}).get(key)
    if v is None:
        return "–"
    return f"{v:.{nd}f} [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]" if ci and None not in ci else f"{v:.{nd}f}"


def main(cands: list[str]) -> None:
    out = Path("outputs/compare")
    rows, sheets = [], []
    for c in cands:
        run = Path(f"runs/compare_{c}")
        cfg = json.loads((run / "train_config.json").read_text())["resolved_model_config"]
        lp = _last_probe(run)
        m = json.loads((out / c / "metrics.json").read_text())
        ol = m["open_loop"]["val_scenes"]
        nav = m["navigation"]["val_scenes"]
        ours, noc, wrong = ol["ours"], ol["ours, no context"], ol["ours, another scene's context"]
        p = {k: float(v) for k, v in lp["probe"].items()}
        nan = float("nan")
        model = f"{cfg['prediction_type']} 1×{cfg['patch_size'][1]}×{cfg['patch_size'][2]}"
        sampled = " / ".join(f"{p.get(f'val/sample_mse_{k}', nan):.4f}" for k in ("ctx", "noctx", "wrongctx"))
        if20 = " | ".join(_ci(r, "IF(SD<0.2)") for r in (ours, noc, wrong))
        rows.append(
            f"| {c} | {model}, K={cfg['num_context_frames']} | {lp['train'].get('step', '–')}"
            f" | {p.get('val/x0_mse_mean', nan):.4f} | {sampled}"
            f" | {_ci(nav['ours'], 'PSNR', 2)} | {_ci(nav['ours'], 'SSIM')}"
            f" | {_ci(ours, 'SD')} | {if20} | {ours['plan_latency_ms']:.0f} |"
        )
        sheet = imageio.imread(out / c / "samples_open_loop_val_scenes_ours.png")
        bar = np.full((14, sheet.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, c, (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        sheets.append(np.concatenate([bar, sheet]))
    w = max(s.shape[1] for s in sheets)
    sheets = [np.pad(s, ((0, 6), (0, w - s.shape[1]), (0, 0)), constant_values=255) for s in sheets]
    imageio.imwrite(out / "samples.png", np.concatenate(sheets))
    head = (
        "| candidate | model | steps | held-out x0-MSE (σ grid) | sampled MSE ctx / none / wrong"
        " | nav PSNR | nav SSIM | SD | IF(SD<0.2) | IF(SD<0.2) no ctx | IF(SD<0.2) wrong ctx | plan ms |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    text = "# Side-by-side (issue 10)\n\n" + head + "\n" + "\n".join(rows) + "\n\n![samples](samples.png)\n"
    (out / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
