"""``lalo.inference.v1`` messages ↔ domain types (the only module that knows both)."""

from __future__ import annotations

import json

from lalo.inference.v1 import inference_pb2 as pb
from lalo_common.errors import InvalidArgument

from lalo_inference_large.domain import (
    ChatMessage,
    Chunk,
    Complete,
    EmbeddingRequest,
    Embeddings,
    Event,
    GenerationRequest,
    Load,
    ModelCard,
    ResponseFormat,
    SamplingOptions,
    StreamError,
    TokenCount,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    ToolDefinition,
)

_FINISH = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "abort": pb.FINISH_REASON_ABORT,
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
}
_TOOL_CHOICE: dict[int, ToolChoiceMode] = {
    pb.ToolChoice.MODE_AUTO: "auto",
    pb.ToolChoice.MODE_NONE: "none",
    pb.ToolChoice.MODE_REQUIRED: "required",
    pb.ToolChoice.MODE_FUNCTION: "function",
}


def _json_object(text: str, what: str, param: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}", param=param) from exc
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object", param=param)
    return value


def response_format(message: pb.ResponseFormat) -> ResponseFormat:
    kind = message.type
    if kind in (pb.ResponseFormat.TYPE_UNSPECIFIED, pb.ResponseFormat.TEXT):
        return ResponseFormat("text")
    if kind == pb.ResponseFormat.JSON_OBJECT:
        return ResponseFormat("json_object")
    if kind == pb.ResponseFormat.JSON_SCHEMA:
        if not message.json_schema:
            raise InvalidArgument(
                "response_format JSON_SCHEMA needs json_schema", param="response_format"
            )
        return ResponseFormat(
            "json_schema",
            json_schema=_json_object(message.json_schema, "json_schema", "response_format"),
        )
    if kind == pb.ResponseFormat.GRAMMAR:
        if not message.grammar.strip():
            raise InvalidArgument(
                "response_format GRAMMAR needs a grammar", param="response_format"
            )
        return ResponseFormat("grammar", grammar=message.grammar)
    raise InvalidArgument(f"unknown response_format type {kind}", param="response_format")


def sampling_options(message: pb.SamplingParams) -> SamplingOptions:
    return SamplingOptions(
        max_tokens=message.max_tokens if message.HasField("max_tokens") else None,
        temperature=message.temperature if message.HasField("temperature") else None,
        top_p=message.top_p if message.HasField("top_p") else None,
        top_k=message.top_k if message.HasField("top_k") else None,
        min_p=message.min_p if message.HasField("min_p") else None,
        seed=message.seed if message.HasField("seed") else None,
        stop=tuple(message.stop),
        presence_penalty=message.presence_penalty,
        frequency_penalty=message.frequency_penalty,
        logit_bias=dict(message.logit_bias),
        logprobs=message.logprobs,
        top_logprobs=message.top_logprobs,
        response_format=response_format(message.response_format),
        echo=message.echo,
    )


def _chat(chat: pb.ChatInput) -> tuple[tuple[ChatMessage, ...], tuple[ToolDefinition, ...]]:
    messages = tuple(
        ChatMessage(
            m.role,
            m.content,
            m.name,
            m.tool_call_id,
            tuple(ToolCall(c.id, c.name, c.arguments_json) for c in m.tool_calls),
        )
        for m in chat.messages
    )
    tools = tuple(
        ToolDefinition(
            t.name,
            t.description,
            _json_object(t.parameters_json, f"parameters of tool {t.name!r}", "tools")
            if t.parameters_json
            else {"type": "object", "properties": {}},
        )
        for t in chat.tools
    )
    return messages, tools


def _tool_choice(chat: pb.ChatInput) -> ToolChoice:
    return ToolChoice(_TOOL_CHOICE[chat.tool_choice.mode], chat.tool_choice.function)


def generation_request(message: pb.GenerateRequest, request_id: str = "") -> GenerationRequest:
    which = message.WhichOneof("input")
    if which is None:
        raise InvalidArgument("the request needs an input: chat or prompt")
    if message.sampling.echo and which == "chat":
        raise InvalidArgument("echo is for raw prompts, not chat messages", param="echo")
    sampling = sampling_options(message.sampling)
    rid = message.request_id or request_id
    if which == "prompt":
        return GenerationRequest(rid, message.model, prompt=message.prompt, sampling=sampling)
    if which == "prompt_token_ids":
        return GenerationRequest(
            rid,
            message.model,
            prompt_token_ids=tuple(message.prompt_token_ids.ids),
            sampling=sampling,
        )
    messages, tools = _chat(message.chat)
    return GenerationRequest(
        rid,
        message.model,
        messages=messages,
        tools=tools,
        sampling=sampling,
        tool_choice=_tool_choice(message.chat),
    )


def tokenize_request(message: pb.TokenizeRequest) -> GenerationRequest:
    which = message.WhichOneof("input")
    if which is None:
        raise InvalidArgument("the request needs an input: chat or prompt")
    if which == "prompt":
        return GenerationRequest("", message.model, prompt=message.prompt)
    messages, tools = _chat(message.chat)
    return GenerationRequest(
        "", message.model, messages=messages, tools=tools, tool_choice=_tool_choice(message.chat)
    )


def embedding_request(message: pb.EmbedRequest, request_id: str = "") -> EmbeddingRequest:
    return EmbeddingRequest(
        message.request_id or request_id,
        message.model,
        tuple(message.inputs),
        dimensions=message.dimensions if message.HasField("dimensions") else None,
    )


def embed_message(result: Embeddings) -> pb.EmbedResponse:
    return pb.EmbedResponse(
        model=result.model,
        embeddings=[pb.Embedding(values=vector) for vector in result.vectors],
        prompt_tokens=result.prompt_tokens,
    )


def event_message(event: Event) -> pb.GenerateResponse:
    if isinstance(event, Chunk):
        return pb.GenerateResponse(
            chunk=pb.GenerateChunk(
                text=event.text,
                tokens=[
                    pb.TokenInfo(
                        token_id=t.token_id,
                        token=t.token,
                        logprob=t.logprob,
                        token_bytes=t.token_bytes,
                        top_logprobs=[
                            pb.TopLogprob(
                                token_id=a.token_id,
                                token=a.token,
                                logprob=a.logprob,
                                token_bytes=a.token_bytes,
                            )
                            for a in t.top_logprobs
                        ],
                    )
                    for t in event.tokens
                ],
                echo=event.echo,
                tool_calls=[
                    pb.ToolCall(id=c.id, name=c.name, arguments_json=c.arguments_json)
                    for c in event.tool_calls
                ],
            )
        )
    if isinstance(event, Complete):
        return pb.GenerateResponse(
            complete=pb.GenerateComplete(
                finish_reason=_FINISH[event.finish_reason],
                usage=pb.Usage(
                    prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens
                ),
                model=event.model,
            )
        )
    if isinstance(event, StreamError):
        return pb.GenerateResponse(
            error=pb.GenerateError(code=event.code.value[0], message=event.message)
        )
    raise TypeError(f"not an event: {event!r}")


def models_message(cards: list[ModelCard]) -> pb.ListModelsResponse:
    return pb.ListModelsResponse(
        models=[
            pb.ModelInfo(
                id=c.id,
                backend=c.backend,
                context_length=c.context_length,
                owned_by=c.owned_by,
                supports_json_schema=c.supports_json_schema,
                supports_grammar=c.supports_grammar,
                supports_logprobs=c.supports_logprobs,
                supports_tools=c.supports_tools,
                embeddings=c.embeddings,
                embedding_dimensions=c.embedding_dimensions,
            )
            for c in cards
        ]
    )


def tokenize_message(count: TokenCount) -> pb.TokenizeResponse:
    return pb.TokenizeResponse(
        token_ids=list(count.token_ids),
        count=len(count.token_ids),
        context_length=count.context_length,
    )


def load_message(load: Load) -> pb.LoadReport:
    return pb.LoadReport(
        running=load.running,
        waiting=load.waiting,
        kv_cache_usage=load.kv_cache_usage,
        max_sequences=load.max_sequences,
    )
