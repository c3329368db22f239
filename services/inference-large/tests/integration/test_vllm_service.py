"""inference-large over gRPC with the real vLLM engine: the same checks as inference-small."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.errors import error_param
from lalo_common.tool_calls import HERMES
from lalo_inference_large.domain import ChatMessage, GenerationRequest, ToolChoice, ToolDefinition
from lalo_inference_large.tool_use import plan_tools
from lalo_inference_large.vllm_backend import VllmBackend, vllm_available

from .conftest import CONTEXT, MAX_SEQS, MODEL_NAME, SKIP_REASON

if not vllm_available():
    pytest.skip(SKIP_REASON, allow_module_level=True)

pytestmark = pytest.mark.integration

Stub = inference_pb2_grpc.InferenceServiceStub


def chat(text: str, **sampling: object) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        model=MODEL_NAME,
        chat=pb.ChatInput(messages=[pb.ChatMessage(role="user", content=text)]),
        sampling=pb.SamplingParams(**sampling),  # type: ignore[arg-type]
    )


async def collect(
    stub: Stub, request: pb.GenerateRequest
) -> tuple[list[pb.GenerateChunk], pb.GenerateComplete]:
    chunks: list[pb.GenerateChunk] = []
    complete = None
    async for event in stub.Generate(request):
        kind = event.WhichOneof("event")
        if kind == "chunk":
            assert complete is None, "no chunk may follow the completion"
            chunks.append(event.chunk)
        elif kind == "complete":
            complete = event.complete
        else:
            pytest.fail(f"unexpected in-band error: {event.error}")
    assert complete is not None
    return chunks, complete


def text_of(chunks: list[pb.GenerateChunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


def token_ids(chunks: list[pb.GenerateChunk]) -> list[int]:
    return [token.token_id for chunk in chunks for token in chunk.tokens]


async def wait_until_idle(backend: VllmBackend, within_s: float = 30.0) -> int:
    """The engine's unfinished-request count once it settles (aborts are asynchronous)."""
    deadline = time.monotonic() + within_s
    while backend.unfinished_requests() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the engine
        await asyncio.sleep(0.05)
    return backend.unfinished_requests()


async def test_ready_and_lists_the_model(channel: grpc.aio.Channel, stub: Stub) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(
        health_pb2.HealthCheckRequest(service="lalo.inference.v1.InferenceService")
    )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    models = (await stub.ListModels(pb.ListModelsRequest())).models
    assert [m.id for m in models] == [MODEL_NAME]
    assert models[0].backend == "vllm"
    assert models[0].context_length == CONTEXT
    assert models[0].supports_json_schema
    assert models[0].supports_logprobs


async def test_streams_text_in_chunks_then_completes(stub: Stub) -> None:
    chunks, complete = await collect(stub, chat("Tell me about the sea.", max_tokens=24, seed=3))
    assert len(chunks) > 1, "output must stream, not arrive at once"
    assert complete.finish_reason in (pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_STOP)
    assert complete.model == MODEL_NAME
    assert complete.usage.completion_tokens == len(token_ids(chunks))
    # The stream hold (default 40 ms): the first token alone, the fast ones after it together.
    assert len(chunks[0].tokens) == 1
    assert len(chunks) < complete.usage.completion_tokens
    assert complete.usage.prompt_tokens > 0
    # Each chunk's text is whole characters, and the tokens' bytes spell the text.
    raw = b"".join(t.token_bytes for chunk in chunks for t in chunk.tokens)
    assert raw.decode("utf-8") == text_of(chunks)


async def test_max_tokens_ends_with_length(stub: Stub, backend: VllmBackend) -> None:
    eos = backend.tokenizer.eos_token_id
    _, complete = await collect(
        stub, chat("Count.", max_tokens=7, seed=1, logit_bias={eos: -100.0})
    )
    assert complete.finish_reason == pb.FINISH_REASON_LENGTH
    assert complete.usage.completion_tokens == 7


async def test_logit_bias_can_force_the_end_of_text(stub: Stub, backend: VllmBackend) -> None:
    eos = backend.tokenizer.eos_token_id
    chunks, complete = await collect(stub, chat("Stop.", max_tokens=30, logit_bias={eos: 100.0}))
    assert complete.finish_reason == pb.FINISH_REASON_STOP
    assert complete.usage.completion_tokens == 1
    assert text_of(chunks) == ""


async def test_tokenize_counts_the_prompt_as_generate_does(stub: Stub) -> None:
    request = chat("How many tokens is this?", max_tokens=2)
    counted = await stub.Tokenize(pb.TokenizeRequest(model=MODEL_NAME, chat=request.chat))
    _, complete = await collect(stub, request)
    assert counted.count == complete.usage.prompt_tokens == len(counted.token_ids)
    assert counted.context_length == CONTEXT
    plain = await stub.Tokenize(pb.TokenizeRequest(prompt="Hello, world!"))
    assert plain.count == len(plain.token_ids) > 0


async def test_raw_prompt_input(stub: Stub) -> None:
    request = pb.GenerateRequest(
        model="tiny-alias", prompt="Once upon a time", sampling=pb.SamplingParams(max_tokens=5)
    )
    _, complete = await collect(stub, request)
    assert complete.usage.completion_tokens >= 1


async def test_same_seed_same_text_other_seed_other_text(stub: Stub) -> None:
    first, _ = await collect(stub, chat("Write a poem.", max_tokens=32, seed=42, temperature=1.0))
    again, _ = await collect(stub, chat("Write a poem.", max_tokens=32, seed=42, temperature=1.0))
    other, _ = await collect(stub, chat("Write a poem.", max_tokens=32, seed=43, temperature=1.0))
    assert token_ids(first) == token_ids(again)
    assert token_ids(first) != token_ids(other)


async def test_stop_string_ends_the_text_before_it(stub: Stub, backend: VllmBackend) -> None:
    eos = backend.tokenizer.eos_token_id
    base = {"max_tokens": 40, "seed": 7, "temperature": 1.0, "logit_bias": {eos: -100.0}}
    full, _ = await collect(stub, chat("Say something.", **base))
    text = text_of(full)
    assert len(text) > 10
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    stopped, complete = await collect(stub, chat("Say something.", stop=[stop], **base))
    assert complete.finish_reason == pb.FINISH_REASON_STOP
    assert text_of(stopped) == text[: text.index(stop)]


async def test_logprobs_and_top_logprobs(stub: Stub) -> None:
    chunks, _ = await collect(
        stub, chat("Hi.", max_tokens=8, seed=5, logprobs=True, top_logprobs=3)
    )
    tokens = [t for chunk in chunks for t in chunk.tokens]
    assert len(tokens) >= 1
    for token in tokens:
        assert token.logprob <= 0.0
        assert len(token.top_logprobs) == 3
        values = [alt.logprob for alt in token.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert values[0] >= token.logprob - 1e-4
        assert all(alt.token_bytes for alt in token.top_logprobs)
    plain, _ = await collect(stub, chat("Hi.", max_tokens=4, seed=5, logprobs=True))
    assert all(len(t.top_logprobs) == 0 and t.logprob <= 0 for c in plain for t in c.tokens)


async def test_json_schema_output_parses_and_fits(stub: Stub) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "ok": {"type": "boolean"},
        },
        "required": ["name", "age", "ok"],
        "additionalProperties": False,
    }
    fmt = pb.ResponseFormat(type=pb.ResponseFormat.JSON_SCHEMA, json_schema=json.dumps(schema))
    for seed in (1, 2, 3):
        chunks, complete = await collect(
            stub, chat("Give me a person as JSON.", max_tokens=120, seed=seed, response_format=fmt)
        )
        assert complete.finish_reason == pb.FINISH_REASON_STOP, text_of(chunks)
        value = json.loads(text_of(chunks))
        assert set(value) == {"name", "age", "ok"}
        assert isinstance(value["age"], int)
        assert 0 <= value["age"] <= 120
        assert isinstance(value["ok"], bool)
        assert len(value["name"]) <= 12


async def test_json_object_output_parses(stub: Stub) -> None:
    fmt = pb.ResponseFormat(type=pb.ResponseFormat.JSON_OBJECT)
    chunks, complete = await collect(
        stub, chat("JSON please.", max_tokens=200, seed=9, response_format=fmt)
    )
    if complete.finish_reason == pb.FINISH_REASON_STOP:
        assert isinstance(json.loads(text_of(chunks)), dict)
    else:  # an unbounded object may run to max_tokens on a random model; it stays a prefix
        assert text_of(chunks).startswith("{")


async def test_cancel_aborts_the_engine_request(stub: Stub, backend: VllmBackend) -> None:
    eos = backend.tokenizer.eos_token_id
    call = stub.Generate(chat("Go on and on.", max_tokens=900, logit_bias={eos: -100.0}))
    received = 0
    async for event in call:
        if event.WhichOneof("event") == "chunk":
            received += 1
        if received == 2:
            break
    assert backend.unfinished_requests() >= 1
    call.cancel()
    assert await wait_until_idle(backend) == 0


async def test_deadline_aborts_the_engine_request(stub: Stub, backend: VllmBackend) -> None:
    eos = backend.tokenizer.eos_token_id
    request = chat("Go on and on.", max_tokens=1000, logit_bias={eos: -100.0})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.Generate(request, timeout=0.5):
            pass
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await wait_until_idle(backend) == 0


async def test_eight_concurrent_streams_match_their_solo_runs(
    stub: Stub, backend: VllmBackend
) -> None:
    eos = backend.tokenizer.eos_token_id

    def request(seed: int) -> pb.GenerateRequest:
        return chat(
            f"Story number {seed}.",
            max_tokens=48,
            seed=seed,
            temperature=1.0,
            logit_bias={eos: -100.0},
        )

    solo = [token_ids((await collect(stub, request(seed)))[0]) for seed in range(8)]
    results = await asyncio.gather(*(collect(stub, request(seed)) for seed in range(8)))
    for seed, (chunks, complete) in enumerate(results):
        assert complete.finish_reason == pb.FINISH_REASON_LENGTH
        assert complete.usage.completion_tokens == 48
        assert token_ids(chunks) == solo[seed], f"stream {seed} differs when batched"
    assert await wait_until_idle(backend) == 0


async def test_load_report_while_busy_and_idle(stub: Stub, backend: VllmBackend) -> None:
    eos = backend.tokenizer.eos_token_id
    calls = [
        stub.Generate(chat("Busy.", max_tokens=600, logit_bias={eos: -100.0})) for _ in range(4)
    ]
    for call in calls:
        async for event in call:
            if event.WhichOneof("event") == "chunk":
                break
    busy = await stub.GetLoad(pb.GetLoadRequest())
    assert busy.max_sequences == MAX_SEQS
    assert busy.running + busy.waiting >= 1
    assert 0.0 < busy.kv_cache_usage <= 1.0
    for call in calls:
        call.cancel()
    assert await wait_until_idle(backend) == 0
    idle = await stub.GetLoad(pb.GetLoadRequest())
    assert (idle.running, idle.waiting) == (0, 0)


async def test_prompt_over_the_context_is_invalid_argument_naming_the_limit(stub: Stub) -> None:
    long_text = "one two three four five six seven eight nine ten " * 200
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(stub, chat(long_text, max_tokens=5))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_model_len" in (caught.value.details() or "")
    assert str(CONTEXT) in (caught.value.details() or "")


async def test_unknown_model_is_not_found(stub: Stub) -> None:
    request = chat("Hi.", max_tokens=2)
    request.model = "no-such-model"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(stub, request)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as counted:
        await stub.Tokenize(pb.TokenizeRequest(model="no-such-model", prompt="x"))
    assert counted.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("sampling", "fragment"),
    [
        ({"top_logprobs": 50, "logprobs": True}, "top_logprobs"),
        ({"temperature": -1.0}, "temperature"),
        ({"logit_bias": {10**6: 1.0}}, "outside the vocabulary"),
    ],
)
async def test_bad_sampling_values_are_invalid_arguments(
    stub: Stub, sampling: dict[str, object], fragment: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(stub, chat("Hi.", max_tokens=2, **sampling))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (caught.value.details() or "")


ECHO_PROMPT = "Once upon a time there was a small village by the sea"


def prompt(text: str, **sampling: object) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        model=MODEL_NAME,
        prompt=text,
        sampling=pb.SamplingParams(**sampling),  # type: ignore[arg-type]
    )


async def test_echo_scores_the_prompt_as_the_model_does(
    stub: Stub, backend: VllmBackend, tiny_hf_model_dir: Path
) -> None:
    """Echo with logprobs and max_tokens 0 (how harnesses read log-likelihoods): the prompt
    back, each token scored given the ones before, as transformers computes it on the same
    weights; nothing generated, and the engine holds no request afterwards."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    chunks, complete = await collect(
        stub, prompt(ECHO_PROMPT, max_tokens=0, echo=True, logprobs=True, top_logprobs=2)
    )
    (echo,) = chunks
    assert (echo.echo, echo.text) == (True, ECHO_PROMPT)
    assert complete.finish_reason == pb.FINISH_REASON_LENGTH
    assert complete.usage.completion_tokens == 0

    tokenizer = AutoTokenizer.from_pretrained(tiny_hf_model_dir)
    ids = tokenizer(ECHO_PROMPT).input_ids
    model = AutoModelForCausalLM.from_pretrained(tiny_hf_model_dir, torch_dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    log_probs = torch.log_softmax(logits, dim=-1)
    expected = [float(log_probs[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    assert complete.usage.prompt_tokens == len(ids)
    shown = list(echo.tokens)
    if ids[0] == tokenizer.bos_token_id:  # BOS is not in the text: the rest is scored on it
        assert [t.token_id for t in shown] == ids[1:]
        assert [t.logprob for t in shown] == pytest.approx(expected, abs=1e-3)
    else:  # nothing before the first token: no logprob
        assert [t.token_id for t in shown] == ids
        assert not shown[0].HasField("logprob")
        assert [t.logprob for t in shown[1:]] == pytest.approx(expected, abs=1e-3)
        shown = shown[1:]
    for token in shown:
        assert len(token.top_logprobs) == 2
        assert token.top_logprobs[0].logprob >= token.logprob - 1e-4
    assert await wait_until_idle(backend) == 0


async def test_echo_then_the_answer(stub: Stub) -> None:
    plain, _ = await collect(stub, prompt(ECHO_PROMPT, max_tokens=4, temperature=0))
    chunks, complete = await collect(
        stub, prompt(ECHO_PROMPT, max_tokens=4, temperature=0, echo=True)
    )
    assert chunks[0].echo
    assert not chunks[0].tokens  # no logprobs asked for
    assert not any(chunk.echo for chunk in chunks[1:])
    assert text_of(chunks) == ECHO_PROMPT + text_of(plain)
    assert complete.usage.completion_tokens == 4


async def test_what_echo_cannot_do_is_refused(stub: Stub) -> None:
    for request, param in (
        (chat("Hi.", echo=True), "echo"),
        (prompt(ECHO_PROMPT, max_tokens=0), "max_tokens"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await collect(stub, request)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_param(failed.value) == param


def token_prompt(ids: list[int], **sampling: object) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        model=MODEL_NAME,
        prompt_token_ids=pb.TokenIds(ids=ids),
        sampling=pb.SamplingParams(**sampling),  # type: ignore[arg-type]
    )


async def test_a_token_id_prompt_is_the_same_prompt_as_its_text(
    stub: Stub, tiny_hf_model_dir: Path
) -> None:
    """The ids the model's tokenizer makes of a text answer as the text does, and echo
    them back as that text with the same scores."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tiny_hf_model_dir)(ECHO_PROMPT).input_ids
    plain, _ = await collect(stub, prompt(ECHO_PROMPT, max_tokens=4, temperature=0))
    by_ids, complete = await collect(stub, token_prompt(ids, max_tokens=4, temperature=0))
    assert text_of(by_ids) == text_of(plain)
    assert complete.usage.prompt_tokens == len(ids)
    scored_text, _ = await collect(
        stub, prompt(ECHO_PROMPT, max_tokens=0, echo=True, logprobs=True)
    )
    scored_ids, _ = await collect(stub, token_prompt(ids, max_tokens=0, echo=True, logprobs=True))
    assert scored_ids[0].text == ECHO_PROMPT
    assert [(t.token_id, round(t.logprob, 4)) for t in scored_ids[0].tokens] == [
        (t.token_id, round(t.logprob, 4)) for t in scored_text[0].tokens
    ]


async def test_bad_token_id_prompts_are_refused_by_name(stub: Stub) -> None:
    for ids, fragment in (
        ([], "the prompt is empty"),
        ([1, 10**7], "token id 10000000 is not in"),
        ([-1], "token id -1 is not in"),
        ([5] * (CONTEXT + 1), f"has a context of {CONTEXT} tokens"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await collect(stub, token_prompt(ids, max_tokens=2))
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in (failed.value.details() or "")


ADD_TOOL = pb.ToolDefinition(
    name="add",
    description="Adds two integers",
    parameters_json=json.dumps(
        {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": 0, "maximum": 99},
                "b": {"type": "integer", "minimum": 0, "maximum": 99},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        }
    ),
)
NOTE_TOOL = pb.ToolDefinition(
    name="note",
    parameters_json=json.dumps(
        {
            "type": "object",
            "properties": {"text": {"type": "string", "maxLength": 10}},
            "additionalProperties": False,
        }
    ),
)


def tool_request(mode: int, function: str = "", **sampling: object) -> pb.GenerateRequest:
    request = chat("What is 2 + 3?", **sampling)
    request.chat.tools.extend([ADD_TOOL, NOTE_TOOL])
    request.chat.tool_choice.mode = mode  # type: ignore[assignment]
    request.chat.tool_choice.function = function
    return request


async def test_a_required_call_is_decoded_under_its_schema(stub: Stub) -> None:
    for seed in (1, 2):
        chunks, complete = await collect(
            stub, tool_request(pb.ToolChoice.MODE_FUNCTION, "add", max_tokens=120, seed=seed)
        )
        calls = [call for chunk in chunks for call in chunk.tool_calls]
        assert [c.name for c in calls] == ["add"], text_of(chunks)
        arguments = json.loads(calls[0].arguments_json)
        assert isinstance(arguments["a"], int)
        assert isinstance(arguments["b"], int)
        assert calls[0].id.startswith("call_")
        assert text_of(chunks) == ""
        assert complete.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    chunks, complete = await collect(
        stub, tool_request(pb.ToolChoice.MODE_REQUIRED, max_tokens=120, seed=3)
    )
    assert next(c.name for chunk in chunks for c in chunk.tool_calls) in ("add", "note")
    assert complete.finish_reason == pb.FINISH_REASON_TOOL_CALLS


def test_the_call_format_and_special_tokens_in_auto(backend: VllmBackend) -> None:
    # The tiny model's template is Qwen's (Hermes' <tool_call> blocks) and renders history
    # calls itself.
    assert backend.call_format is HERMES
    assert backend._renders_tool_calls

    def skips_specials(mode: str) -> bool:
        request = GenerationRequest(
            "r",
            MODEL_NAME,
            messages=(ChatMessage("user", "2+3?"),),
            tools=(ToolDefinition("add", "", {"type": "object"}),),
            tool_choice=ToolChoice(mode),  # type: ignore[arg-type]
        )
        planned, _ = plan_tools(request, backend.call_format)
        return bool(backend._sampling_params(planned, 10).skip_special_tokens)

    # "auto": call markers are special tokens in some models and must reach the reader.
    assert not skips_specials("auto")
    assert skips_specials("none")
    assert skips_specials("required")


async def test_none_answers_in_text_and_a_history_with_calls_renders(stub: Stub) -> None:
    chunks, complete = await collect(stub, tool_request(pb.ToolChoice.MODE_NONE, max_tokens=4))
    assert not [c for chunk in chunks for c in chunk.tool_calls]
    assert complete.finish_reason == pb.FINISH_REASON_LENGTH
    history = tool_request(pb.ToolChoice.MODE_AUTO, max_tokens=4)
    history.chat.messages.add(
        role="assistant",
        tool_calls=[pb.ToolCall(id="call_1", name="add", arguments_json='{"a": 2, "b": 3}')],
    )
    history.chat.messages.add(role="tool", content="5", tool_call_id="call_1")
    _, complete = await collect(stub, history)
    assert complete.usage.completion_tokens == 4


@pytest.mark.parametrize(
    ("mode", "function", "extra", "param"),
    [
        (pb.ToolChoice.MODE_FUNCTION, "subtract", {}, "tool_choice"),
        (pb.ToolChoice.MODE_FUNCTION, "", {}, "tool_choice"),
        (
            pb.ToolChoice.MODE_REQUIRED,
            "",
            {"response_format": pb.ResponseFormat(type=pb.ResponseFormat.JSON_OBJECT)},
            "response_format",
        ),
    ],
)
async def test_bad_tool_choices_are_refused_by_name(
    stub: Stub, mode: int, function: str, extra: dict[str, object], param: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(stub, tool_request(mode, function, max_tokens=4, **extra))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_param(caught.value) == param
