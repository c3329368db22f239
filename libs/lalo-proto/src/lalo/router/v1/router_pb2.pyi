from lalo.inference.v1 import inference_pb2 as _inference_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChatRequest(_message.Message):
    __slots__ = ("request_id", "model", "chat", "prompt", "prompts", "prompt_token_ids", "sampling", "stream", "principal", "tenant", "allowed_models", "n")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    chat: _inference_pb2.ChatInput
    prompt: str
    prompts: PromptList
    prompt_token_ids: _inference_pb2.TokenIds
    sampling: _inference_pb2.SamplingParams
    stream: bool
    principal: str
    tenant: str
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    n: int
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., chat: _Optional[_Union[_inference_pb2.ChatInput, _Mapping]] = ..., prompt: _Optional[str] = ..., prompts: _Optional[_Union[PromptList, _Mapping]] = ..., prompt_token_ids: _Optional[_Union[_inference_pb2.TokenIds, _Mapping]] = ..., sampling: _Optional[_Union[_inference_pb2.SamplingParams, _Mapping]] = ..., stream: _Optional[bool] = ..., principal: _Optional[str] = ..., tenant: _Optional[str] = ..., allowed_models: _Optional[_Iterable[str]] = ..., n: _Optional[int] = ...) -> None: ...

class PromptList(_message.Message):
    __slots__ = ("prompts", "token_prompts")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedScalarFieldContainer[str]
    token_prompts: _containers.RepeatedCompositeFieldContainer[_inference_pb2.TokenIds]
    def __init__(self, prompts: _Optional[_Iterable[str]] = ..., token_prompts: _Optional[_Iterable[_Union[_inference_pb2.TokenIds, _Mapping]]] = ...) -> None: ...

class RouteDecision(_message.Message):
    __slots__ = ("pool", "model", "reason", "category", "category_confidence", "p_escalate", "replica", "escalated", "classify_ms", "workflow_id")
    POOL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    P_ESCALATE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    ESCALATED_FIELD_NUMBER: _ClassVar[int]
    CLASSIFY_MS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    pool: str
    model: str
    reason: str
    category: str
    category_confidence: float
    p_escalate: float
    replica: str
    escalated: bool
    classify_ms: float
    workflow_id: str
    def __init__(self, pool: _Optional[str] = ..., model: _Optional[str] = ..., reason: _Optional[str] = ..., category: _Optional[str] = ..., category_confidence: _Optional[float] = ..., p_escalate: _Optional[float] = ..., replica: _Optional[str] = ..., escalated: _Optional[bool] = ..., classify_ms: _Optional[float] = ..., workflow_id: _Optional[str] = ...) -> None: ...

class WorkflowProgress(_message.Message):
    __slots__ = ("workflow_id", "type", "text")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    type: str
    text: str
    def __init__(self, workflow_id: _Optional[str] = ..., type: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ChatResponse(_message.Message):
    __slots__ = ("route", "chunk", "complete", "error", "progress", "choice")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    route: RouteDecision
    chunk: _inference_pb2.GenerateChunk
    complete: _inference_pb2.GenerateComplete
    error: _inference_pb2.GenerateError
    progress: WorkflowProgress
    choice: int
    def __init__(self, route: _Optional[_Union[RouteDecision, _Mapping]] = ..., chunk: _Optional[_Union[_inference_pb2.GenerateChunk, _Mapping]] = ..., complete: _Optional[_Union[_inference_pb2.GenerateComplete, _Mapping]] = ..., error: _Optional[_Union[_inference_pb2.GenerateError, _Mapping]] = ..., progress: _Optional[_Union[WorkflowProgress, _Mapping]] = ..., choice: _Optional[int] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("request_id", "model", "inputs", "principal", "tenant", "dimensions")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    principal: str
    tenant: str
    dimensions: int
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., principal: _Optional[str] = ..., tenant: _Optional[str] = ..., dimensions: _Optional[int] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("result", "pool", "replica")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    result: _inference_pb2.EmbedResponse
    pool: str
    replica: str
    def __init__(self, result: _Optional[_Union[_inference_pb2.EmbedResponse, _Mapping]] = ..., pool: _Optional[str] = ..., replica: _Optional[str] = ...) -> None: ...
