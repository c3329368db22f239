"""The official openai SDK through gateway → router → inference-large (real processes).

The router is given inference-large as its only pool, "large"; requests name the served
model, so they reach it without classification. Needs vLLM (run by `make test-large`).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from lalo_inference_large.vllm_backend import vllm_available

from .conftest import SKIP_REASON

if not vllm_available():
    pytest.skip(SKIP_REASON, allow_module_level=True)

from lalo_testing.stack import free_port, start_relay, stop_process, wait_for_grpc

pytestmark = pytest.mark.integration

MODEL = "tiny-large"


def _spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def sdk(
    tiny_hf_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[openai.OpenAI]:
    logs = tmp_path_factory.mktemp("stack-logs")
    token, api_key = secrets.token_hex(16), f"sk-test-{secrets.token_hex(16)}"
    large = free_port()
    engine = _spawn(
        "lalo_inference_large",
        {
            "LALO_SERVICE_TOKEN": token,
            "LALO_INFERENCE_LARGE_MODEL": str(tiny_hf_model_dir),
            "LALO_INFERENCE_LARGE_SERVED_MODEL_NAME": MODEL,
            "LALO_INFERENCE_LARGE_LISTEN_ADDRESS": f"127.0.0.1:{large}",
            "LALO_INFERENCE_LARGE_DTYPE": "float32",
            "LALO_INFERENCE_LARGE_MAX_MODEL_LEN": "1024",
            "LALO_INFERENCE_LARGE_MAX_NUM_SEQS": "8",
            "LALO_INFERENCE_LARGE_KV_CACHE_MEMORY_BYTES": str(128 * 1024 * 1024),
            "LALO_INFERENCE_LARGE_ENFORCE_EAGER": "true",
            "LALO_INFERENCE_LARGE_TORCH_COMPILE": "false",
        },
        logs / "inference-large.log",
    )
    relay = None
    try:
        relay = start_relay(
            pool="large",
            backend_target=f"127.0.0.1:{large}",
            api_key=api_key,
            service_token=token,
            log_dir=logs,
            # The gateway is ready once a model is served, i.e. once vLLM is up: as patient
            # as the engine's own wait (a cold start imports torch for over a minute here).
            timeout_s=300,
        )
        wait_for_grpc(f"127.0.0.1:{large}", 300, engine)
        with openai.OpenAI(
            base_url=f"{relay.gateway_url}/v1", api_key=api_key, max_retries=0, timeout=120
        ) as client:
            yield client
    except BaseException:
        for log in sorted(logs.iterdir()):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        if relay is not None:
            relay.stop()
        stop_process(engine, timeout_s=60)


def test_the_model_is_listed(sdk: openai.OpenAI) -> None:
    assert MODEL in {model.id for model in sdk.models.list()}


def test_streamed_chat_completion(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a story."}],
        max_tokens=16,
        seed=1,
        stream=True,
    )
    deltas = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len([d for d in deltas if d]) > 1
    assert "".join(deltas)


def test_several_choices_on_vllm(sdk: openai.OpenAI) -> None:
    """n=2: two engine requests (seeds 3 and 4), the prompt counted once."""
    messages: Any = [{"role": "user", "content": "Tell me a story."}]
    single = sdk.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)
    reply = sdk.chat.completions.create(
        model=MODEL, messages=messages, n=2, max_tokens=8, temperature=1.0, seed=3
    )
    assert [choice.index for choice in reply.choices] == [0, 1]
    assert all(choice.message.content for choice in reply.choices)
    assert all(choice.finish_reason in ("stop", "length") for choice in reply.choices)
    assert reply.usage is not None
    assert single.usage is not None
    assert reply.usage.prompt_tokens == single.usage.prompt_tokens
    assert 2 <= reply.usage.completion_tokens <= 2 * 8


def test_json_schema_through_the_stack(sdk: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["n"],
        "additionalProperties": False,
    }
    reply = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "A number as JSON."}],
        max_tokens=40,
        seed=2,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "n", "schema": schema, "strict": True},
        },
    )
    value = json.loads(reply.choices[0].message.content or "")
    assert 0 <= value["n"] <= 9
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0


def test_echo_scores_a_prompt_through_the_stack(sdk: openai.OpenAI) -> None:
    """What an evaluation harness sends for a log-likelihood, answered by vLLM."""
    prompt = "Once upon a time there was"
    completion = sdk.completions.create(
        model=MODEL, prompt=prompt, echo=True, max_tokens=0, logprobs=1
    )
    (choice,) = completion.choices
    assert choice.text == prompt
    assert choice.logprobs is not None
    scores = [s for s in choice.logprobs.token_logprobs or [] if s is not None]
    assert len(scores) >= len(prompt.split()) - 1
    assert all(s <= 0.0 for s in scores)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 0


def test_token_id_prompts_through_the_stack(sdk: openai.OpenAI, tiny_hf_model_dir: Path) -> None:
    """lm-evaluation-harness's default: the prompt as the model's own token ids (the
    tokenizer it names), scored and answered by vLLM as the text would be."""
    from transformers import AutoTokenizer

    prompt = "Once upon a time there was"
    ids = AutoTokenizer.from_pretrained(tiny_hf_model_dir)(prompt).input_ids
    by_text = sdk.completions.create(model=MODEL, prompt=prompt, max_tokens=3, temperature=0)
    by_ids = sdk.completions.create(model=MODEL, prompt=[ids, ids], max_tokens=3, temperature=0)
    assert [c.text for c in by_ids.choices] == [by_text.choices[0].text] * 2
    scored = sdk.completions.create(model=MODEL, prompt=ids, echo=True, max_tokens=0, logprobs=1)
    assert scored.choices[0].text == prompt
    with pytest.raises(openai.BadRequestError) as failed:
        sdk.completions.create(model=MODEL, prompt=[1, 10**8], max_tokens=1)
    assert isinstance(failed.value.body, dict)
    assert failed.value.body["param"] == "prompt"


def test_a_tool_call_round_trip_through_the_stack(sdk: openai.OpenAI) -> None:
    """Function calling with the official SDK on vLLM: a named function is called (decoded
    under its schema), the call and its result go back, and the model answers in text."""
    tools: list[Any] = [
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Adds two small integers",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "a": {"type": "integer", "minimum": 0, "maximum": 9},
                        "b": {"type": "integer", "minimum": 0, "maximum": 9},
                    },
                    "required": ["a", "b"],
                    "additionalProperties": False,
                },
            },
        }
    ]
    ask: list[Any] = [{"role": "user", "content": "What is 2 + 3?"}]
    reply = sdk.chat.completions.create(
        model=MODEL,
        messages=ask,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "add"}},
        max_tokens=60,
        seed=1,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["add"]
    arguments = json.loads(calls[0].function.arguments)
    assert 0 <= arguments["a"] <= 9
    assert 0 <= arguments["b"] <= 9
    answer = sdk.chat.completions.create(
        model=MODEL,
        messages=[
            *ask,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": calls[0].id, "content": "5"},
        ],
        tools=tools,
        max_tokens=4,
        seed=1,
    )
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].finish_reason == "length"
