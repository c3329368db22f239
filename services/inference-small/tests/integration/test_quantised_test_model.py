"""The Q4_0 benchmark presets stream real text, as the f16 tiny model does.

A random 32K-vocabulary model without suppression emits mostly padding tokens whose text is
empty, so a benchmark through the gateway would stream nothing. This writes a small shape with
the Q4_0 presets' layout (Q4_0 layers, f16 embeddings, Q8_0 output) and checks the output.
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import pytest
from lalo_testing import tiny_model

pytestmark = pytest.mark.integration


def test_q4_0_layout_generates_printable_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shape = tiny_model.Shape(
        n_layer=2,
        n_embd=128,
        n_ff=256,
        n_head=4,
        n_head_kv=2,
        n_vocab=4096,
        n_ctx=512,
        quant="q4_0",
    )
    monkeypatch.setitem(tiny_model.PRESETS, "small-q4_0", shape)
    path = tiny_model.write_model(tmp_path / "q4.gguf", "small-q4_0", seed=3)

    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, verbose=False)
    try:
        out = llm.create_completion("Tell me about the sea.", max_tokens=24, temperature=0.0)
    finally:
        llm.close()
    assert isinstance(out, dict)  # not streamed
    text = out["choices"][0]["text"]
    assert out["usage"]["completion_tokens"] > 0
    # One visible character per generated token at least: no empty padding tokens, no lone
    # UTF-8 bytes, no control characters.
    assert len(text) >= out["usage"]["completion_tokens"]
    assert text.isascii(), repr(text)
    assert text.isprintable(), repr(text)


def test_llama_cpp_is_built_without_amx_kernels() -> None:
    # On a Xeon with AMX, -march=native alone turns llama.cpp's AMX kernels on, and with Q4_0
    # weights the test above then prints garbage or segfaults (ggml-org/llama.cpp#20824);
    # `make install` builds with -mno-amx-*. The flag is a compile-time one: it shows whether
    # the kernels were built in, whatever CPU runs the test.
    info = llama_cpp.llama_print_system_info().decode()
    assert "AMX_INT8 = 1" not in info, info
