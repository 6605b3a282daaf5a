"""Sampler settings scored on the held-out probe with a run's latest EMA weights (issue 10).

    python launch/experiments/compare/sampler_probe.py --run runs/default \
        --settings det:3:8:2 sto:3:4:1 --seeds 0 1

A setting is ``det|sto`` (deterministic Euler or diffusers' ``stochastic_sampling``), the scheduler shift,
the number of steps and the guidance scale. Prints the sampled-video MSE with the true, no and another
scene's context, and the PSNR of the pose windows (``training/val_probe.py``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file
from v4s_agent.training.checkpoints import latest_checkpoint
from v4s_agent.training.val_probe import probe_batch, run_probe

from v4s_agent.model.configuration_model import ModelConfig
from v4s_agent.model.pipeline_v4s import build_pipeline

CONDITIONS = (("ctx", "ctx"), ("none", "noctx"), ("wrong", "wrongctx"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--val-data", default="data/val_scenes")
    ap.add_argument("--settings", nargs="+", default=["det:3:8:2", "sto:3:8:2", "sto:3:4:1"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    a = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = latest_checkpoint(Path(a.run))
    if ckpt is None:
        raise SystemExit(f"error: no checkpoint in {a.run}")
    state = json.loads((ckpt / "state.json").read_text())
    mcfg = ModelConfig.from_dict(state["model_config"])
    pipe = build_pipeline(mcfg)
    pipe.set_progress_bar_config(disable=True)
    ema = load_file(str(ckpt / "ema.safetensors"))
    with torch.no_grad():
        for n, p in pipe.transformer.named_parameters():
            p.copy_(ema[n])
    pipe.transformer.eval()
    batch = probe_batch(a.val_data, mcfg, seed=777)
    print(f"# {ckpt} (step {state['step']}), {len(batch['instruction'])} held-out windows")
    for setting in a.settings:
        kind, shift, steps, w = setting.split(":")
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(
            shift=float(shift), stochastic_sampling=kind == "sto"
        )
        for seed in a.seeds:
            r = run_probe(pipe, batch, int(steps), float(w), seed=seed)
            mse = " ".join(f"{k} {r[f'sample_mse_{c}']:.4f}" for k, c in CONDITIONS)
            psnr = r.get("sample_psnr_pose_ctx", float("nan"))
            print(f"{setting} seed {seed}: sampled MSE {mse}; pose PSNR {psnr:.2f}", flush=True)


if __name__ == "__main__":
    main()
