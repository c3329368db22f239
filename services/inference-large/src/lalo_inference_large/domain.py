"""Wire-independent request and event types, and the interface every backend implements.

The servicer converts ``lalo.inference.v1`` messages to these and back; backends (vLLM in
process, an OpenAI-compatible upstream) only ever see these, so they are tested without gRPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import grpc
from lalo_common.tool_calls import CallFormat

FinishReason = Literal["stop", "length", "abort", "tool_calls"]
ToolChoiceMode = Literal["auto", "none", "required", "function"]
ResponseKind = Literal["text", "json_object", "json_schema", "grammar"]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments_json: str  # a JSON object's text


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str
    name: str = ""
    tool_call_id: str = ""
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn's calls


@dataclass(frozen=True)
class ToolChoice:
    mode: ToolChoiceMode = "auto"
    function: str = ""  # for "function"


@dataclass(frozen=True)
class ToolDefinition:
    name: str
    description: str
    # JSON Schema of the arguments, already parsed.
    parameters: dict[str, object]


@dataclass(frozen=True)
class ResponseFormat:
    kind: ResponseKind = "text"
    # Parsed JSON Schema for "json_schema"; GBNF text for "grammar".
    json_schema: dict[str, object] | None = None
    grammar: str = ""


@dataclass(frozen=True)
class SamplingOptions:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: bool = False
    top_logprobs: int = 0
    response_format: ResponseFormat = field(default_factory=ResponseFormat)
    # Send the raw prompt back first, scored with logprobs (text completions' echo); with
    # it max_tokens may be 0 (the prompt scored, nothing generated).
    echo: bool = False


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    model: str
    # Exactly one of prompt (raw text), prompt_token_ids (a raw prompt the caller
    # tokenized for this model, used as given) and messages (chat) is used.
    prompt: str | None = None
    messages: tuple[ChatMessage, ...] = ()
    tools: tuple[ToolDefinition, ...] = ()
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    prompt_token_ids: tuple[int, ...] | None = None
    tool_choice: ToolChoice = field(default_factory=ToolChoice)

    @property
    def is_chat(self) -> bool:
        return self.prompt is None and self.prompt_token_ids is None


@dataclass(frozen=True)
class TopLogprob:
    token_id: int
    token: str
    logprob: float
    token_bytes: bytes


@dataclass(frozen=True)
class TokenInfo:
    token_id: int
    token: str
    logprob: float | None  # None only for an echoed prompt's first token
    token_bytes: bytes
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class Chunk:
    """Text produced since the previous chunk (whole characters only) and its tokens."""

    text: str
    tokens: tuple[TokenInfo, ...] = ()
    echo: bool = False  # the echoed prompt (SamplingOptions.echo), before any output
    tool_calls: tuple[ToolCall, ...] = ()  # calls the model made, each whole


@dataclass(frozen=True)
class Complete:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    model: str


@dataclass(frozen=True)
class StreamError:
    """An error after the stream has started: sent in-band, then the stream ends."""

    code: grpc.StatusCode
    message: str


Event = Chunk | Complete | StreamError


@dataclass(frozen=True)
class ModelCard:
    id: str
    backend: str
    context_length: int
    owned_by: str = "lalo"
    supports_json_schema: bool = False
    supports_grammar: bool = False
    supports_logprobs: bool = False
    supports_tools: bool = False
    # A sentence-embedding model (vLLM's pooling runner): Embed, never Generate.
    embeddings: bool = False
    embedding_dimensions: int = 0


@dataclass(frozen=True)
class EmbeddingRequest:
    request_id: str
    model: str
    inputs: tuple[str, ...]
    # Shorter vectors from a Matryoshka model; None: the model's own length.
    dimensions: int | None = None


@dataclass(frozen=True)
class Embeddings:
    model: str
    # One L2-normalised vector per input, in the order of the inputs.
    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int


@dataclass(frozen=True)
class TokenCount:
    token_ids: tuple[int, ...]
    context_length: int


@dataclass(frozen=True)
class Load:
    running: int
    waiting: int
    kv_cache_usage: float
    max_sequences: int


class Backend(Protocol):
    """What the servicer needs from a model backend.

    ``start`` does every check that can fail before any output (unknown model, prompt over
    the context, bad sampling values) and raises ``lalo_common.errors`` for those; the
    returned iterator then only yields events. Closing the iterator early (the caller went
    away or its deadline passed) must cancel the request in the engine.
    """

    # How the model writes tool calls in its text when it decides to make them.
    call_format: CallFormat

    async def start(self, request: GenerationRequest) -> AsyncIterator[Event]: ...

    async def list_models(self) -> list[ModelCard]: ...

    async def tokenize(self, request: GenerationRequest) -> TokenCount: ...

    async def embed(self, request: EmbeddingRequest) -> Embeddings: ...

    async def load(self) -> Load: ...

    async def close(self) -> None: ...
