"""OpenAI request and response models for the public REST API.

Requests tolerate unknown fields (clients send newer parameters all the time) and log them;
fields LALO cannot honour yet are refused with a clear 400 instead of being ignored.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from lalo_common.tool_calls import FUNCTION_NAME
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from lalo_gateway.security.edge import MAX_CHOICES

log = logging.getLogger(__name__)

MAX_STOP = 4


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_unknown(self) -> OpenAIModel:
        if self.model_extra:
            log.debug("ignoring unknown fields: %s", ", ".join(sorted(self.model_extra)))
        return self


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    arguments: str


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    @model_validator(mode="after")
    def _content_required(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a '{self.role}' message needs content")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs the tool_call_id of the call it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an 'assistant' message has tool_calls")
        return self


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> ResponseFormat:
        if self.type == "json_schema" and (
            self.json_schema is None or self.json_schema.json_schema is None
        ):
            raise ValueError("type 'json_schema' needs json_schema.schema")
        return self


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=FUNCTION_NAME.pattern)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: NamedFunction


def check_tool_choice(
    choice: object, named: str | None, names: list[str], *, auto_needs_tools: bool
) -> None:
    """``tool_choice`` against the request's tools (``names``); ``named`` is the function a
    choice names. ValueError says what is wrong."""
    if choice is not None and not names and (auto_needs_tools or choice != "auto"):
        raise ValueError("tool_choice is only allowed when tools are specified")
    if named is not None and named not in names:
        raise ValueError(
            f"it names function {named!r}, which is not among the tools ({', '.join(names)})"
        )


Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class SamplingFields(OpenAIModel):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: Temperature | None = None
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    user: str | None = None
    # Extensions also accepted by vLLM.
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if len(items) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed")
        if any(item == "" for item in items):
            raise ValueError("stop sequences must not be empty")
        return items

    @field_validator("logit_bias")
    @classmethod
    def _check_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.lstrip("-").isdigit():
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
        return value


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    # Accepted; a forced call (tool_choice "required" or a function) is one call.
    parallel_tool_calls: bool | None = None
    # OpenAI's deprecated form of tools: refused by name rather than silently ignored.
    functions: Any = None
    function_call: Any = None

    @field_validator("functions", "function_call")
    @classmethod
    def _deprecated_functions(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            raise ValueError(
                f"{info.field_name} is OpenAI's deprecated form of function calling and is "
                "not supported; send tools (and tool_choice) instead"
            )
        return value

    @field_validator("tool_choice")
    @classmethod
    def _choice_needs_tools(
        cls, value: str | NamedToolChoice | None, info: ValidationInfo
    ) -> str | NamedToolChoice | None:
        # A field validator (tools is declared first) so the error names tool_choice.
        tools = info.data.get("tools") or []
        named = value.function.name if isinstance(value, NamedToolChoice) else None
        check_tool_choice(value, named, [t.function.name for t in tools], auto_needs_tools=True)
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        # A field validator (logprobs is declared first) so the error names top_logprobs.
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs requires logprobs to be true")
        return value


class CompletionRequest(SamplingFields):
    # A text, a list of texts, token ids (one prompt) or a list of token-id lists, as OpenAI
    # takes it; token ids need a named model (the router refuses them for "auto").
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool | None = False
    # 0 only with echo: the prompt scored, nothing generated (ServingCompletions checks).
    max_tokens: int | None = Field(default=None, ge=0)
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)
    response_format: ResponseFormat | None = None

    @field_validator("prompt")
    @classmethod
    def _some_prompt(
        cls, value: str | list[str] | list[int] | list[list[int]]
    ) -> str | list[str] | list[int] | list[list[int]]:
        if value == []:
            raise ValueError("it is an empty list; send a string, a list of strings or token ids")
        return value


class EmbeddingRequest(OpenAIModel):
    model: str = Field(min_length=1)
    # Text, or (as OpenAI also accepts) token ids; ServingEmbeddings refuses token ids.
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(
        cls, value: str | list[str] | list[int] | list[list[int]]
    ) -> str | list[str] | list[int] | list[list[int]]:
        if value == "" or value == []:
            raise ValueError("it must be a non-empty string or a non-empty list of strings")
        if isinstance(value, list):
            for index, item in enumerate(value):
                if item == "" or item == []:
                    raise ValueError(f"input[{index}] is empty; every input must be non-empty")
        return value


# --- Responses API (POST /v1/responses). A response is stored unless `store` is false (or the
# operator turned storage off), so `previous_response_id` can continue it; or the whole
# conversation comes in `input` (stored_responses.py).


class InputText(BaseModel):
    model_config = ConfigDict(extra="allow")
    # output_text: an assistant turn of an earlier response, sent back as history.
    type: Literal["input_text", "output_text"]
    text: str


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[InputText]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionCallItem(BaseModel):
    """A call the model made in an earlier response, sent back as history."""

    model_config = ConfigDict(extra="allow")
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str


class FunctionCallOutputItem(BaseModel):
    """The caller's result of running a call."""

    model_config = ConfigDict(extra="allow")
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[InputText]

    def text(self) -> str:
        if isinstance(self.output, str):
            return self.output
        return "".join(part.text for part in self.output)


def _item_type(value: Any) -> str:
    # A message may leave out its type (OpenAI's "easy" input message).
    if isinstance(value, dict):
        return f"type={value.get('type', 'message')}"
    return f"type={getattr(value, 'type', 'message')}"


InputItem = Annotated[
    # Tags as "type=..." so an error's param names the item's field, not the tag.
    Annotated[InputMessage, Tag("type=message")]
    | Annotated[FunctionCallItem, Tag("type=function_call")]
    | Annotated[FunctionCallOutputItem, Tag("type=function_call_output")],
    Discriminator(
        _item_type,
        custom_error_type="invalid_item",
        custom_error_message=(
            "an input item is a message, a function_call or a function_call_output"
        ),
    ),
]


class ResponsesFunctionTool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    name: str = Field(pattern=FUNCTION_NAME.pattern)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponsesNamedTool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    name: str = Field(min_length=1)


class ResponsesTextFormat(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, min_length=1, max_length=64)
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> ResponsesTextFormat:
        if self.type == "json_schema" and (self.json_schema is None or not self.name):
            raise ValueError("type 'json_schema' needs a name and a schema")
        return self


class ResponsesText(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: ResponsesTextFormat | None = None


class ResponsesRequest(OpenAIModel):
    model: str = Field(min_length=1)
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: Temperature | None = None
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stream: bool | None = False
    tools: list[ResponsesFunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ResponsesNamedTool | None = None
    parallel_tool_calls: bool | None = None
    text: ResponsesText | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    store: bool | None = None
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=64)
    conversation: Any = None
    background: bool | None = None

    @field_validator("input")
    @classmethod
    def _some_input(cls, value: str | list[Any]) -> str | list[Any]:
        if value == "" or value == []:
            raise ValueError("it is empty; send a text or a list of input items")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _choice_needs_tools(
        cls, value: str | ResponsesNamedTool | None, info: ValidationInfo
    ) -> str | ResponsesNamedTool | None:
        tools = info.data.get("tools") or []
        named = value.name if isinstance(value, ResponsesNamedTool) else None
        # The Responses API takes "auto" with no tools (agent frameworks send it).
        check_tool_choice(value, named, [t.name for t in tools], auto_needs_tools=False)
        return value

    @field_validator("conversation")
    @classmethod
    def _no_conversations(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(
                "conversation objects are not supported; continue a stored response with "
                "previous_response_id, or send the whole conversation in input"
            )
        return value

    @field_validator("background")
    @classmethod
    def _not_background(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("background responses are not supported; stream instead")
        return value
