"""Wire ↔ domain conversions for lalo.inference.v1 (kept apart from the servicer)."""

from __future__ import annotations

from lalo.inference.v1 import inference_pb2 as pb
from lalo_common.errors import InvalidArgument

from lalo_inference_small.engine import Echo, Event, Failed, Finished, TextDelta, TokenOut
from lalo_inference_small.llama_model import ChatTurn
from lalo_inference_small.sampling import (
    SamplingConfig,
    grammar_for_json_object,
    grammar_for_json_schema,
)
from lalo_inference_small.tool_use import ToolCalls

FINISH_REASONS = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "abort": pb.FINISH_REASON_ABORT,
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
}


def sampling_from_pb(params: pb.SamplingParams) -> SamplingConfig:
    fmt = params.response_format
    grammar: str | None = None
    if fmt.type == pb.ResponseFormat.JSON_OBJECT:
        grammar = grammar_for_json_object()
    elif fmt.type == pb.ResponseFormat.JSON_SCHEMA:
        if not fmt.json_schema:
            raise InvalidArgument(
                "response_format json_schema needs a schema", param="response_format"
            )
        grammar = grammar_for_json_schema(fmt.json_schema)
    elif fmt.type == pb.ResponseFormat.GRAMMAR:
        if not fmt.grammar.strip():
            raise InvalidArgument("response_format grammar is empty", param="response_format")
        grammar = fmt.grammar
    return SamplingConfig(
        max_tokens=params.max_tokens if params.HasField("max_tokens") else None,
        temperature=params.temperature if params.HasField("temperature") else 1.0,
        top_p=params.top_p if params.HasField("top_p") else 1.0,
        top_k=params.top_k if params.HasField("top_k") else 0,
        min_p=params.min_p if params.HasField("min_p") else 0.0,
        seed=params.seed if params.HasField("seed") else None,
        stop=tuple(params.stop),
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        logit_bias=dict(params.logit_bias),
        logprobs=params.logprobs or params.top_logprobs > 0,
        top_logprobs=params.top_logprobs,
        grammar=grammar,
        echo=params.echo,
    )


def turns_from_pb(chat: pb.ChatInput) -> list[ChatTurn]:
    """The conversation (its tools are tool_use's business)."""
    return [
        ChatTurn(
            m.role,
            m.content,
            m.name,
            m.tool_call_id,
            tuple((c.id, c.name, c.arguments_json) for c in m.tool_calls),
        )
        for m in chat.messages
    ]


def token_to_pb(token: TokenOut) -> pb.TokenInfo:
    return pb.TokenInfo(
        token_id=token.token_id,
        token=token.text,
        logprob=token.logprob,  # None (unset) only for an echoed prompt's first token
        token_bytes=token.token_bytes,
        top_logprobs=[
            pb.TopLogprob(
                token_id=a.token_id, token=a.text, logprob=a.logprob, token_bytes=a.token_bytes
            )
            for a in token.top
        ],
    )


def event_to_pb(event: Event | ToolCalls, model_id: str) -> pb.GenerateResponse:
    if isinstance(event, ToolCalls):
        return pb.GenerateResponse(
            chunk=pb.GenerateChunk(
                tool_calls=[
                    pb.ToolCall(id=c.id, name=c.name, arguments_json=c.arguments_json)
                    for c in event.calls
                ]
            )
        )
    if isinstance(event, TextDelta):
        return pb.GenerateResponse(
            chunk=pb.GenerateChunk(text=event.text, tokens=[token_to_pb(t) for t in event.tokens])
        )
    if isinstance(event, Echo):
        return pb.GenerateResponse(
            chunk=pb.GenerateChunk(
                text=event.text, tokens=[token_to_pb(t) for t in event.tokens], echo=True
            )
        )
    if isinstance(event, Finished):
        return pb.GenerateResponse(
            complete=pb.GenerateComplete(
                finish_reason=FINISH_REASONS[event.reason],
                usage=pb.Usage(
                    prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens
                ),
                model=model_id,
            )
        )
    assert isinstance(event, Failed)
    return pb.GenerateResponse(error=pb.GenerateError(code=13, message=event.message))
