from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkflowState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKFLOW_STATE_UNSPECIFIED: _ClassVar[WorkflowState]
    WORKFLOW_STATE_PENDING: _ClassVar[WorkflowState]
    WORKFLOW_STATE_PLANNING: _ClassVar[WorkflowState]
    WORKFLOW_STATE_RUNNING: _ClassVar[WorkflowState]
    WORKFLOW_STATE_SUCCEEDED: _ClassVar[WorkflowState]
    WORKFLOW_STATE_FAILED: _ClassVar[WorkflowState]
    WORKFLOW_STATE_CANCELLED: _ClassVar[WorkflowState]
    WORKFLOW_STATE_BUDGET_EXCEEDED: _ClassVar[WorkflowState]

class StepKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_KIND_UNSPECIFIED: _ClassVar[StepKind]
    STEP_KIND_TOOL: _ClassVar[StepKind]
    STEP_KIND_MODEL: _ClassVar[StepKind]
    STEP_KIND_FINAL: _ClassVar[StepKind]

class StepState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_STATE_UNSPECIFIED: _ClassVar[StepState]
    STEP_STATE_PENDING: _ClassVar[StepState]
    STEP_STATE_RUNNING: _ClassVar[StepState]
    STEP_STATE_SUCCEEDED: _ClassVar[StepState]
    STEP_STATE_FAILED: _ClassVar[StepState]
    STEP_STATE_SKIPPED: _ClassVar[StepState]
WORKFLOW_STATE_UNSPECIFIED: WorkflowState
WORKFLOW_STATE_PENDING: WorkflowState
WORKFLOW_STATE_PLANNING: WorkflowState
WORKFLOW_STATE_RUNNING: WorkflowState
WORKFLOW_STATE_SUCCEEDED: WorkflowState
WORKFLOW_STATE_FAILED: WorkflowState
WORKFLOW_STATE_CANCELLED: WorkflowState
WORKFLOW_STATE_BUDGET_EXCEEDED: WorkflowState
STEP_KIND_UNSPECIFIED: StepKind
STEP_KIND_TOOL: StepKind
STEP_KIND_MODEL: StepKind
STEP_KIND_FINAL: StepKind
STEP_STATE_UNSPECIFIED: StepState
STEP_STATE_PENDING: StepState
STEP_STATE_RUNNING: StepState
STEP_STATE_SUCCEEDED: StepState
STEP_STATE_FAILED: StepState
STEP_STATE_SKIPPED: StepState

class Message(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class Budgets(_message.Message):
    __slots__ = ("max_steps", "max_wall_time_s", "max_tokens", "max_replans")
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_WALL_TIME_S_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLANS_FIELD_NUMBER: _ClassVar[int]
    max_steps: int
    max_wall_time_s: float
    max_tokens: int
    max_replans: int
    def __init__(self, max_steps: _Optional[int] = ..., max_wall_time_s: _Optional[float] = ..., max_tokens: _Optional[int] = ..., max_replans: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("steps", "tokens", "replans")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    REPLANS_FIELD_NUMBER: _ClassVar[int]
    steps: int
    tokens: int
    replans: int
    def __init__(self, steps: _Optional[int] = ..., tokens: _Optional[int] = ..., replans: _Optional[int] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("id", "plan_version", "index", "kind", "state", "tool", "arguments_json", "prompt", "result_json", "error", "attempts", "idempotency_key", "tokens")
    ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    id: str
    plan_version: int
    index: int
    kind: StepKind
    state: StepState
    tool: str
    arguments_json: str
    prompt: str
    result_json: str
    error: str
    attempts: int
    idempotency_key: str
    tokens: int
    def __init__(self, id: _Optional[str] = ..., plan_version: _Optional[int] = ..., index: _Optional[int] = ..., kind: _Optional[_Union[StepKind, str]] = ..., state: _Optional[_Union[StepState, str]] = ..., tool: _Optional[str] = ..., arguments_json: _Optional[str] = ..., prompt: _Optional[str] = ..., result_json: _Optional[str] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., tokens: _Optional[int] = ...) -> None: ...

class Workflow(_message.Message):
    __slots__ = ("id", "owner", "state", "messages", "allowed_tools", "budgets", "usage", "steps", "final_answer", "error", "model", "created_at_ms", "updated_at_ms", "last_event_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_TOOLS_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    FINAL_ANSWER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner: str
    state: WorkflowState
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    allowed_tools: _containers.RepeatedScalarFieldContainer[str]
    budgets: Budgets
    usage: Usage
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    final_answer: str
    error: str
    model: str
    created_at_ms: int
    updated_at_ms: int
    last_event_id: int
    def __init__(self, id: _Optional[str] = ..., owner: _Optional[str] = ..., state: _Optional[_Union[WorkflowState, str]] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., allowed_tools: _Optional[_Iterable[str]] = ..., budgets: _Optional[_Union[Budgets, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., final_answer: _Optional[str] = ..., error: _Optional[str] = ..., model: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., last_event_id: _Optional[int] = ...) -> None: ...

class CreateWorkflowRequest(_message.Message):
    __slots__ = ("messages", "allowed_tools", "budgets", "owner", "model", "request_id")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_TOOLS_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    allowed_tools: _containers.RepeatedScalarFieldContainer[str]
    budgets: Budgets
    owner: str
    model: str
    request_id: str
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., allowed_tools: _Optional[_Iterable[str]] = ..., budgets: _Optional[_Union[Budgets, _Mapping]] = ..., owner: _Optional[str] = ..., model: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetWorkflowRequest(_message.Message):
    __slots__ = ("id", "owner")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner: str
    def __init__(self, id: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class ListWorkflowsRequest(_message.Message):
    __slots__ = ("owner", "limit", "before_id")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_ID_FIELD_NUMBER: _ClassVar[int]
    owner: str
    limit: int
    before_id: str
    def __init__(self, owner: _Optional[str] = ..., limit: _Optional[int] = ..., before_id: _Optional[str] = ...) -> None: ...

class ListWorkflowsResponse(_message.Message):
    __slots__ = ("workflows",)
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    workflows: _containers.RepeatedCompositeFieldContainer[Workflow]
    def __init__(self, workflows: _Optional[_Iterable[_Union[Workflow, _Mapping]]] = ...) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ("id", "owner", "after_event_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner: str
    after_event_id: int
    def __init__(self, id: _Optional[str] = ..., owner: _Optional[str] = ..., after_event_id: _Optional[int] = ...) -> None: ...

class CancelWorkflowRequest(_message.Message):
    __slots__ = ("id", "owner", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., owner: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WorkflowEvent(_message.Message):
    __slots__ = ("id", "workflow_id", "type", "workflow_state", "step_id", "step_state", "data_json", "created_at_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_STATE_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_STATE_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    workflow_id: str
    type: str
    workflow_state: WorkflowState
    step_id: str
    step_state: StepState
    data_json: str
    created_at_ms: int
    def __init__(self, id: _Optional[int] = ..., workflow_id: _Optional[str] = ..., type: _Optional[str] = ..., workflow_state: _Optional[_Union[WorkflowState, str]] = ..., step_id: _Optional[str] = ..., step_state: _Optional[_Union[StepState, str]] = ..., data_json: _Optional[str] = ..., created_at_ms: _Optional[int] = ...) -> None: ...

class StreamComplete(_message.Message):
    __slots__ = ("state", "last_event_id")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    state: WorkflowState
    last_event_id: int
    def __init__(self, state: _Optional[_Union[WorkflowState, str]] = ..., last_event_id: _Optional[int] = ...) -> None: ...

class StreamError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class StreamEventsResponse(_message.Message):
    __slots__ = ("event", "complete", "error")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    event: WorkflowEvent
    complete: StreamComplete
    error: StreamError
    def __init__(self, event: _Optional[_Union[WorkflowEvent, _Mapping]] = ..., complete: _Optional[_Union[StreamComplete, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ...) -> None: ...
