"""Chat templates of model families that write the BOS and EOS tokens themselves, rendered
and tokenized as the model was trained: TinyLlama's (Zephyr's) ends every turn with
eos_token, Llama 2's and Mistral's start with bos_token on a tokenizer that also adds BOS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lalo_inference_small.engine import BatchEngine, EngineConfig
from lalo_inference_small.llama_model import ChatTurn, LlamaModel
from lalo_testing.tiny_model import write_model

# TinyLlama-1.1B-Chat's template (Zephyr's), as its GGUF files carry it.
ZEPHYR = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}"
)
# Llama 2's shape, abridged: BOS written by the template before each exchange.
LLAMA2 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
TURNS = [
    ChatTurn("user", "Hello there"),
    ChatTurn("assistant", "Hi"),
    ChatTurn("user", "How are you?"),
]


def engine(model: LlamaModel) -> BatchEngine:
    return BatchEngine(model, EngineConfig(n_ctx=512, n_batch=64, parallel=1, threads=1), "m")


@pytest.fixture
def zephyr(tmp_path: Path) -> Iterator[LlamaModel]:
    model = LlamaModel(write_model(tmp_path / "zephyr.gguf", "tiny", chat_template=ZEPHYR))
    yield model
    model.close()


def test_every_turn_ends_with_the_eos_token(zephyr: LlamaModel) -> None:
    text = zephyr.render_chat(TURNS)
    assert text == (
        "<|user|>\nHello there<|im_end|>\n<|assistant|>\nHi<|im_end|>\n"
        "<|user|>\nHow are you?<|im_end|>\n<|assistant|>\n"
    )
    served = engine(zephyr)
    try:
        ids = served.tokenize(chat=TURNS)
    finally:
        served.close()
    # The end of each turn is the EOS token itself, as in training, not its spelling.
    assert ids.count(zephyr.eos_id) == 3


def test_a_template_that_writes_bos_does_not_get_a_second_one(tmp_path: Path) -> None:
    model = LlamaModel(
        write_model(tmp_path / "llama2.gguf", "tiny", add_bos=True, chat_template=LLAMA2)
    )
    served = engine(model)
    try:
        ids = served.tokenize(chat=TURNS)
    finally:
        served.close()
        model.close()
    assert ids[0] == model.bos_id
    assert ids[1] != model.bos_id
    assert ids.count(model.bos_id) == 2  # one per exchange, as the template writes them
    assert ids.count(model.eos_id) == 1
