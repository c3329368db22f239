"""Writes random-weight Hugging Face (Llama) chat models that vLLM loads and runs.

The GGUF models of :mod:`lalo_testing.tiny_model` serve llama.cpp; vLLM wants a Hugging Face
folder instead: ``config.json``, a fast tokenizer (``tokenizer.json`` and
``tokenizer_config.json`` with the chat template) and ``model.safetensors``. Everything is
written by hand from NumPy, so neither torch nor transformers is needed to make one, and the
same tokenizer (the same learned merges, the same special tokens, ChatML) is used as in the
GGUF models, so both inference services count tokens alike.

Attention on vLLM's CPU backend needs a head size of at least 32 and the GPU kernels prefer
64, so the ``tiny`` preset has 2 heads of 64 over a 128-wide residual stream: about 1.5 MiB.
Random weights cost the same compute as real ones, so a preset of a real model's shape is a
fair speed benchmark. ``weights=False`` writes config and tokenizer only, for vLLM's
``load_format="dummy"``.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lalo_testing.tiny_model import CHATML_TOOLS_TEMPLATE, SPECIAL_TOKENS, learn_tokenizer

# Qwen2's pre-tokenizer split: digits one by one, letters with their leading space or mark.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class HFShape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    max_position: int


PRESETS: dict[str, HFShape] = {
    "tiny": HFShape(
        layers=2, hidden=128, intermediate=256, heads=2, kv_heads=2, vocab=1024, max_position=2048
    ),
    # TinyLlama-1.1B's shape, for speed comparisons that resemble a real model.
    "tinyllama": HFShape(
        layers=22,
        hidden=2048,
        intermediate=5632,
        heads=32,
        kv_heads=4,
        vocab=32000,
        max_position=2048,
    ),
}


def _tokenizer_json(tokens: list[str], merges: list[str], first_special: int) -> dict[str, object]:
    vocab = {token: index for index, token in enumerate(tokens[:first_special])}
    added = [
        {
            "id": first_special + offset,
            "content": special,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for offset, special in enumerate(SPECIAL_TOKENS)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": QWEN2_SPLIT},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {
                    "type": "ByteLevel",
                    "add_prefix_space": False,
                    "trim_offsets": False,
                    "use_regex": False,
                },
            ],
        },
        "post_processor": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": False,
            "use_regex": False,
        },
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": False,
            "use_regex": False,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [merge.split(" ") for merge in merges],
        },
    }


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """The safetensors layout: u64 header length, JSON header, then the raw tensors."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, array in tensors.items():
        if array.dtype != np.float32:
            raise TypeError(f"{name}: expected float32, got {array.dtype}")
        size = array.nbytes
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # keeps the data 8-byte aligned
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for array in tensors.values():
            out.write(np.ascontiguousarray(array).tobytes())


def write_hf_model(
    out_dir: Path, preset: str = "tiny", *, seed: int = 0, weights: bool = True
) -> Path:
    """Writes the model folder; the same preset and seed always give the same bytes."""
    shape = PRESETS[preset]
    n_merges = min(shape.vocab - 256 - len(SPECIAL_TOKENS), 700)
    tok = learn_tokenizer(n_merges)
    tokens = list(tok.tokens)
    # Pad the vocabulary with unused tokens so the output layer has the preset's cost.
    for index in range(len(tokens), shape.vocab):
        tokens.append(f"<|unused_{index}|>")
    # tokenizer.json's model vocab holds the learned tokens; specials and padding are added
    # tokens so they are never produced by BPE.
    first_special = tok.first_special
    tokenizer = _tokenizer_json(
        tokens[: first_special + len(SPECIAL_TOKENS)], tok.merges, first_special
    )
    added = tokenizer["added_tokens"]
    assert isinstance(added, list)
    for index in range(first_special + len(SPECIAL_TOKENS), shape.vocab):
        added.append(
            {
                "id": index,
                "content": tokens[index],
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    head_dim = shape.hidden // shape.heads
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": shape.max_position,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "vocab_size": shape.vocab,
        "bos_token_id": tok.bos_id,
        "eos_token_id": tok.eos_id,
        "pad_token_id": tok.bos_id,
        "torch_dtype": "float32",
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "generation_config.json").write_text(
        json.dumps({"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id}, indent=2)
    )
    (out_dir / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": SPECIAL_TOKENS[0],
                "eos_token": SPECIAL_TOKENS[2],
                "pad_token": SPECIAL_TOKENS[0],
                "add_bos_token": False,
                "add_eos_token": False,
                "clean_up_tokenization_spaces": False,
                "model_max_length": shape.max_position,
                # Renders as CHATML_TEMPLATE does until tools are given.
                "chat_template": CHATML_TOOLS_TEMPLATE,
            },
            indent=2,
        )
    )
    if weights:
        _write_weights(out_dir / "model.safetensors", shape, first_special, seed)
    return out_dir


def _write_weights(path: Path, shape: HFShape, first_special: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    head_dim = shape.hidden // shape.heads
    kv_dim = shape.kv_heads * head_dim

    def matrix(rows: int, cols: int, scale: float = 1.0) -> np.ndarray:
        std = np.float32(scale / np.sqrt(cols))
        return rng.standard_normal((rows, cols), dtype=np.float32) * std

    def ones() -> np.ndarray:
        return np.ones(shape.hidden, dtype=np.float32)

    # Dimension 0 of the residual stream carries a large constant (every token's embedding
    # has it), so it is positive at the last layer whatever the input; output rows read it
    # only to push suppressed tokens far down (below).
    embeddings = matrix(shape.vocab, shape.hidden, scale=float(np.sqrt(shape.hidden)))
    embeddings[:, 0] = np.float32(10.0)
    tensors: dict[str, np.ndarray] = {"model.embed_tokens.weight": embeddings}
    for layer in range(shape.layers):
        prefix = f"model.layers.{layer}"
        tensors[f"{prefix}.input_layernorm.weight"] = ones()
        tensors[f"{prefix}.self_attn.q_proj.weight"] = matrix(shape.hidden, shape.hidden)
        tensors[f"{prefix}.self_attn.k_proj.weight"] = matrix(kv_dim, shape.hidden)
        tensors[f"{prefix}.self_attn.v_proj.weight"] = matrix(kv_dim, shape.hidden)
        tensors[f"{prefix}.self_attn.o_proj.weight"] = matrix(shape.hidden, shape.hidden)
        tensors[f"{prefix}.post_attention_layernorm.weight"] = ones()
        tensors[f"{prefix}.mlp.gate_proj.weight"] = matrix(shape.intermediate, shape.hidden)
        tensors[f"{prefix}.mlp.up_proj.weight"] = matrix(shape.intermediate, shape.hidden)
        tensors[f"{prefix}.mlp.down_proj.weight"] = matrix(shape.hidden, shape.intermediate)
    tensors["model.norm.weight"] = ones()
    # Sharper output logits (std about 3) make a random model's choices clear. Tokens that
    # would garble text get a large negative weight on the constant dimension: lone
    # non-ASCII and control bytes, special and unused tokens (EOS included; tests that
    # need EOS use logit_bias). Their logits sit about 20 below the rest.
    output = matrix(shape.vocab, shape.hidden, scale=3.0)
    output[:, 0] = 0
    suppressed = [byte for byte in range(256) if byte >= 0x80 or byte < 0x20]
    suppressed += list(range(first_special, shape.vocab))
    output[suppressed, :] = 0
    output[suppressed, 0] = np.float32(-3.0)
    tensors["lm_head.weight"] = output
    _write_safetensors(path, tensors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="folder to write the model into")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-weights", action="store_true", help="config and tokenizer only (load_format=dummy)"
    )
    args = parser.parse_args(argv)
    write_hf_model(args.out, args.preset, seed=args.seed, weights=not args.no_weights)
    print(f"wrote {args.out} (preset {args.preset})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
