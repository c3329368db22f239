"""Writes random-weight GGUF chat models that llama.cpp loads and runs.

Model hubs are out of reach on the build machines, so the project makes its own models: a
real byte-level BPE tokenizer (learned deterministically from a built-in corpus), a ChatML
chat template, and random weights of a chosen shape. The ``tiny`` preset (about 1 MiB) is
what tests and ``make up`` use; the ``tinyllama`` and ``qwen2.5-0.5b`` presets have the
shapes of the real models in Q4_0 (f16 embeddings and an 8-bit output layer, as real Q4_0
files keep them), which costs the same compute as the real weights and so is a fair speed
benchmark.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# ChatML with tools as Qwen 2.5 writes them (Hermes' format): the tools listed in the system
# turn, a call as <tool_call>{"name": ..., "arguments": ...}</tool_call>, a tool's answer as
# a user turn in <tool_response>. For tests of tool calling (write_model(tools="hermes")).
CHATML_TOOLS_TEMPLATE = (
    "{% if tools %}"
    "{{ '<|im_start|>system\\n' }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% endif %}"
    "{{ '# Tools\\n\\nYou may call one or more functions. Function signatures:\\n<tools>' }}"
    "{% for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}"
    "{{ '\\n</tools>\\n\\nFor each call, return a JSON object within <tool_call></tool_call>"
    ' tags:\\n<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}'
    "\\n</tool_call><|im_end|>\\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and tools %}"
    "{% elif message['role'] == 'assistant' and message.get('tool_calls') %}"
    "{{ '<|im_start|>assistant\\n' + (message['content'] or '') }}"
    "{% for call in message['tool_calls'] %}"
    "{{ '\\n<tool_call>\\n{\"name\": \"' + call['function']['name'] + '\", \"arguments\": '"
    " + (call['function']['arguments'] | tojson) + '}\\n</tool_call>' }}"
    "{% endfor %}{{ '<|im_end|>\\n' }}"
    "{% elif message['role'] == 'tool' %}"
    "{{ '<|im_start|>user\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>"
    "<|im_end|>\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# LFM2's (Liquid's) way, abridged: tools listed as JSON in the system turn between
# <|tool_list_start|> markers, a tool's answer between <|tool_response_start|> markers, and
# only each message's content rendered: the model writes its calls into its own text as
# <|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>, so earlier calls must
# be in an assistant turn's content for the model to see them (write_model(tools="lfm2")).
LFM2_TOOLS_TEMPLATE = (
    "{% set ns = namespace(system='') %}"
    "{% if messages[0]['role'] == 'system' %}{% set ns.system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% endif %}"
    "{% if tools %}"
    "{% set ns.system = ns.system + ('\n' if ns.system else '') + 'List of tools: "
    "<|tool_list_start|>[' %}"
    "{% for tool in tools %}{% set ns.system = ns.system + (tool | tojson) %}"
    "{% if not loop.last %}{% set ns.system = ns.system + ', ' %}{% endif %}{% endfor %}"
    "{% set ns.system = ns.system + ']<|tool_list_end|>' %}"
    "{% endif %}"
    "{% if ns.system %}{{ '<|im_start|>system\n' + ns.system + '<|im_end|>\n' }}{% endif %}"
    "{% for message in messages %}"
    "{% set content = message['content'] %}"
    "{% if message['role'] == 'tool' %}"
    "{% set content = '<|tool_response_start|>' + content + '<|tool_response_end|>' %}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + content + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TOOL_TEMPLATES = {"hermes": CHATML_TOOLS_TEMPLATE, "lfm2": LFM2_TOOLS_TEMPLATE}
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# LFM2's tool markers are control tokens of its vocabulary.
LFM2_TOOL_TOKENS = (
    "<|tool_list_start|>",
    "<|tool_list_end|>",
    "<|tool_call_start|>",
    "<|tool_call_end|>",
    "<|tool_response_start|>",
    "<|tool_response_end|>",
)

# A small English corpus: enough text to learn a few hundred merges that make the
# tokenizer behave like a real one on ordinary prompts.
CORPUS = (
    """
The quick brown fox jumps over the lazy dog. A language model predicts the next token
from the tokens before it. Hello, world! How are you today? I am fine, thank you.
What is the capital of France? The capital of France is Paris. Please write a short poem
about the sea and the sky. Summarize the following text in one sentence. Extract the names
and dates from this document. Solve the equation: 2 + 2 = 4, and 12 * 7 = 84.
def main(): return print("hello") if __name__ == "__main__" else None
The router classifies every request and sends it to the cheapest model that can answer.
Companies run their own models on their own servers, and their data never leaves them.
Once upon a time there was a small model that answered questions quickly and well.
Explain why the sky is blue. Because sunlight is scattered by the air, blue light most.
Translate into French: good morning, good night, thank you very much, see you soon.
The meeting is on Monday at ten o'clock in the morning; bring the report and the numbers.
Count from one to ten: one two three four five six seven eight nine ten eleven twelve.
Reasoning step by step: first we read the question, then we think, then we answer it.
JSON: {"name": "Alice", "age": 30, "city": "Berlin", "tags": ["a", "b"], "ok": true}
She said that they would come back in the evening, after the rain had stopped falling.
Water boils at one hundred degrees Celsius at sea level; ice melts at zero degrees.
"""
    * 4
)

PRETOKENIZE = re.compile(r"'(?:s|t|re|ve|m|ll|d)| ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map used by byte-level BPE vocabularies."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


@dataclass(frozen=True)
class Tokenizer:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int
    eos_id: int
    first_special: int


def learn_tokenizer(n_merges: int) -> Tokenizer:
    """Learns ``n_merges`` BPE merges from CORPUS; ties break by pair text (deterministic)."""
    byte_map = bytes_to_unicode()
    words = Counter(
        tuple(byte_map[b] for b in piece.encode("utf-8")) for piece in PRETOKENIZE.findall(CORPUS)
    )
    vocab: list[str] = [byte_map[b] for b in range(256)]
    merges: list[str] = []
    corpus = dict(words)
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in corpus.items():
            for left, right in itertools.pairwise(word):
                pairs[(left, right)] += count
        if not pairs:
            break
        (left, right), _count = min(pairs.items(), key=lambda item: (-item[1], item[0]))
        merged = left + right
        merges.append(f"{left} {right}")
        vocab.append(merged)
        new_corpus: dict[tuple[str, ...], int] = {}
        for word, count in corpus.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == left and word[i + 1] == right:
                    out.append(merged)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_corpus[tuple(out)] = new_corpus.get(tuple(out), 0) + count
        corpus = new_corpus
    first_special = len(vocab)
    vocab.extend(SPECIAL_TOKENS)
    token_types = [1] * first_special + [3] * len(SPECIAL_TOKENS)
    return Tokenizer(
        tokens=vocab,
        token_types=token_types,
        merges=merges,
        bos_id=first_special,  # <|endoftext|>
        eos_id=first_special + 2,  # <|im_end|>
        first_special=first_special,
    )


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_vocab: int
    n_ctx: int
    quant: str  # "f16" or "q4_0"


PRESETS: dict[str, Shape] = {
    "tiny": Shape(
        n_layer=2, n_embd=64, n_ff=128, n_head=4, n_head_kv=2, n_vocab=1024, n_ctx=2048, quant="f16"
    ),
    "tinyllama": Shape(
        n_layer=22,
        n_embd=2048,
        n_ff=5632,
        n_head=32,
        n_head_kv=4,
        n_vocab=32000,
        n_ctx=2048,
        quant="q4_0",
    ),
    "qwen2.5-0.5b": Shape(
        n_layer=24,
        n_embd=896,
        n_ff=4864,
        n_head=14,
        n_head_kv=2,
        n_vocab=151936,
        n_ctx=4096,
        quant="q4_0",
    ),
}


def _q4_0_random(rng: np.random.Generator, rows: int, cols: int, scale: float) -> np.ndarray:
    """Random Q4_0 blocks written directly: fp16 scale + 16 bytes of 4-bit values per 32."""
    if cols % 32:
        raise ValueError(f"Q4_0 needs a multiple of 32 columns, got {cols}")
    blocks = rows * (cols // 32)
    out = np.empty((blocks, 18), dtype=np.uint8)
    out[:, :2] = np.frombuffer(np.float16(scale).tobytes(), dtype=np.uint8)
    out[:, 2:] = rng.integers(0, 256, size=(blocks, 16), dtype=np.uint8)
    return out.reshape(rows, (cols // 32) * 18)


def _q8_0(values: np.ndarray) -> np.ndarray:
    """Q8_0 blocks (fp16 scale + 32 int8 per 32 values), quantised as llama.cpp does."""
    rows, cols = values.shape
    if cols % 32:
        raise ValueError(f"Q8_0 needs a multiple of 32 columns, got {cols}")
    blocks = values.reshape(rows * (cols // 32), 32)
    scale = np.abs(blocks).max(axis=1) / 127.0
    safe = np.where(scale == 0, 1.0, scale)[:, None]
    quants = np.rint(blocks / safe).clip(-127, 127).astype(np.int8)
    out = np.empty((blocks.shape[0], 34), dtype=np.uint8)
    out[:, :2] = scale.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = quants.view(np.uint8)
    return out.reshape(rows, (cols // 32) * 34)


def write_model(
    path: Path,
    preset: str = "tiny",
    seed: int = 0,
    *,
    add_bos: bool = False,
    tools: str = "",
    chat_template: str = "",
) -> Path:
    """Writes the model; the same preset and seed always give the same bytes. ``add_bos``:
    the tokenizer starts every text with BOS, as Llama's does (the default, False, is
    Qwen's way). ``tools``: a chat template that offers tools, as "hermes" (Qwen's,
    CHATML_TOOLS_TEMPLATE) or "lfm2" (Liquid's, LFM2_TOOLS_TEMPLATE, with its marker
    tokens) models have it. ``chat_template``: another template instead (a model family's
    own, for tests of how it renders)."""
    if tools and tools not in TOOL_TEMPLATES:
        raise ValueError(f"tools must be one of {sorted(TOOL_TEMPLATES)}, got {tools!r}")
    import gguf  # imported here: only this tool needs it

    shape = PRESETS[preset]
    rng = np.random.default_rng(seed)
    n_merges = min(shape.n_vocab - 256 - len(SPECIAL_TOKENS), 700)
    tok = learn_tokenizer(n_merges)
    tokens = list(tok.tokens)
    types = list(tok.token_types)
    # Pad to the preset's vocabulary size with unused tokens so the output layer has the
    # real model's cost.
    extra = LFM2_TOOL_TOKENS if tools == "lfm2" else ()
    for i in range(len(tokens), shape.n_vocab - len(extra)):
        tokens.append(f"<|unused_{i}|>")
        types.append(5)  # UNUSED
    tokens.extend(extra)
    types.extend([3] * len(extra))  # CONTROL
    n_vocab = len(tokens)

    # Tokens a random model must not emit: non-ASCII single bytes (lone UTF-8 pieces),
    # control/unused tokens (they would end or garble the text).
    byte_map = bytes_to_unicode()
    suppressed = [byte for byte in range(256) if byte >= 0x80 or byte < 0x20]
    # EOS stays reachable (a zero row: an ordinary, middling logit) so grammars and tests can
    # end a reply; the other special tokens and unused padding never come out.
    suppressed_ids = (set(suppressed) | set(range(tok.first_special, n_vocab))) - {tok.eos_id}
    del byte_map

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"lalo-random-{preset}")
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_rope_dimension_count(shape.n_embd // shape.n_head)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(
        gguf.LlamaFileType.MOSTLY_Q4_0 if shape.quant == "q4_0" else gguf.LlamaFileType.MOSTLY_F16
    )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(tok.merges)
    writer.add_bos_token_id(tok.bos_id)
    writer.add_eos_token_id(tok.eos_id)
    writer.add_add_bos_token(add_bos)
    writer.add_chat_template(chat_template or (TOOL_TEMPLATES[tools] if tools else CHATML_TEMPLATE))

    head_dim = shape.n_embd // shape.n_head
    kv_dim = shape.n_head_kv * head_dim

    # Suppression: residual dimension 0 carries a constant that no layer writes to, so after
    # the final RMSNorm it is always positive; suppressed tokens get a large negative weight
    # on it (and zero elsewhere), which puts their logits far below every other token's
    # whatever the input. Q4_0 presets do the same with the layout real Q4_0 files have: the
    # embedding table (a row lookup, no compute) in f16 and the output layer in 8 bits, so a
    # benchmark streams real text instead of the padding tokens of a 32K vocabulary.
    quantised = shape.quant == "q4_0"

    def matrix(
        name: str,
        rows: int,
        cols: int,
        *,
        suppressed_rows: set[int] | None = None,
        constant_col0: float | None = None,
        zero_row0: bool = False,
    ) -> None:
        std = 1.0 / np.sqrt(cols)
        if quantised and constant_col0 is None and not suppressed_rows:
            data = _q4_0_random(rng, rows, cols, scale=float(std) / 4.0)
            if zero_row0:
                data[0, :] = 0  # zero scales: the row is exactly zero
            writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
            return
        values = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(std)
        if constant_col0 is not None:
            values[:, 0] = np.float32(constant_col0)
        if zero_row0:
            values[0, :] = 0
        if suppressed_rows:
            rows_index = sorted(suppressed_rows)
            values[rows_index, :] = 0
            values[rows_index, 0] = np.float32(-8.0)
            values[tok.eos_id, :] = 0
        if quantised and suppressed_rows:
            writer.add_tensor(name, _q8_0(values), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            return
        writer.add_tensor(name, values.astype(np.float16))

    def norm(name: str) -> None:
        writer.add_tensor(name, np.ones(shape.n_embd, dtype=np.float32))

    matrix("token_embd.weight", n_vocab, shape.n_embd, constant_col0=1.0)
    for layer in range(shape.n_layer):
        prefix = f"blk.{layer}"
        norm(f"{prefix}.attn_norm.weight")
        matrix(f"{prefix}.attn_q.weight", shape.n_embd, shape.n_embd)
        matrix(f"{prefix}.attn_k.weight", kv_dim, shape.n_embd)
        matrix(f"{prefix}.attn_v.weight", kv_dim, shape.n_embd)
        matrix(f"{prefix}.attn_output.weight", shape.n_embd, shape.n_embd, zero_row0=True)
        norm(f"{prefix}.ffn_norm.weight")
        matrix(f"{prefix}.ffn_gate.weight", shape.n_ff, shape.n_embd)
        matrix(f"{prefix}.ffn_up.weight", shape.n_ff, shape.n_embd)
        matrix(f"{prefix}.ffn_down.weight", shape.n_embd, shape.n_ff, zero_row0=True)
    norm("output_norm.weight")
    matrix("output.weight", n_vocab, shape.n_embd, suppressed_rows=suppressed_ids)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="where to write the .gguf file")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.force:
        print(f"{args.out} exists (use --force to rewrite)")
        return 0
    write_model(args.out, args.preset, args.seed)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB, preset {args.preset})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
