"""The exponential moving average of the weights (DiT's ``update_ema``): fp32 copy, update, warm-up ramp,
and a context manager that swaps it into a pipeline for sampling or export."""

from __future__ import annotations

from typing import Any

import torch


@torch.no_grad()
def ema_init(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Float32 EMA copy of the trainable parameters."""
    return {n: p.detach().float().clone() for n, p in model.named_parameters()}


@torch.no_grad()
def ema_update(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * param`` (DiT's ``update_ema``)."""
    names = list(ema)
    params = dict(model.named_parameters())
    e = [ema[n] for n in names]
    p = [params[n].detach().float() for n in names]
    torch._foreach_mul_(e, decay)
    torch._foreach_add_(e, p, alpha=1.0 - decay)


def ema_decay_at(step: int, decay: float) -> float:
    """Ramp so early EMA weights are not dominated by the random init."""
    return min(decay, (1.0 + step) / (10.0 + step))


class ema_weights:  # noqa: N801  (a context manager used like a function)
    """Swap the EMA weights into the pipeline's transformer (eval mode) and back on exit."""

    def __init__(self, pipe: Any, ema: dict[str, torch.Tensor]) -> None:
        self.tr, self.ema = pipe.transformer, ema

    def __enter__(self) -> None:
        self.backup = {n: p.detach().clone() for n, p in self.tr.named_parameters()}
        self.was_training = self.tr.training
        with torch.no_grad():
            for n, p in self.tr.named_parameters():
                p.copy_(self.ema[n].to(p.dtype))
        self.tr.eval()

    def __exit__(self, *exc: Any) -> None:
        with torch.no_grad():
            for n, p in self.tr.named_parameters():
                p.copy_(self.backup[n])
        self.tr.train(self.was_training)
