from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListToolsRequest(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class ToolSpec(_message.Message):
    __slots__ = ("name", "description", "parameters_json", "limits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters_json: str
    limits: ToolLimits
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters_json: _Optional[str] = ..., limits: _Optional[_Union[ToolLimits, _Mapping]] = ...) -> None: ...

class ListToolsResponse(_message.Message):
    __slots__ = ("tools",)
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[ToolSpec]
    def __init__(self, tools: _Optional[_Iterable[_Union[ToolSpec, _Mapping]]] = ...) -> None: ...

class ToolLimits(_message.Message):
    __slots__ = ("timeout_s", "max_output_bytes", "max_rows")
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    timeout_s: float
    max_output_bytes: int
    max_rows: int
    def __init__(self, timeout_s: _Optional[float] = ..., max_output_bytes: _Optional[int] = ..., max_rows: _Optional[int] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("tool", "arguments_json", "request_id", "workflow_id", "step_id", "idempotency_key", "limits", "allowed_tools")
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_TOOLS_FIELD_NUMBER: _ClassVar[int]
    tool: str
    arguments_json: str
    request_id: str
    workflow_id: str
    step_id: str
    idempotency_key: str
    limits: ToolLimits
    allowed_tools: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tool: _Optional[str] = ..., arguments_json: _Optional[str] = ..., request_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., step_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., limits: _Optional[_Union[ToolLimits, _Mapping]] = ..., allowed_tools: _Optional[_Iterable[str]] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("content_json", "text", "truncated")
    CONTENT_JSON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    content_json: str
    text: str
    truncated: bool
    def __init__(self, content_json: _Optional[str] = ..., text: _Optional[str] = ..., truncated: _Optional[bool] = ...) -> None: ...

class ToolError(_message.Message):
    __slots__ = ("code", "message", "path", "retryable")
    class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CODE_UNSPECIFIED: _ClassVar[ToolError.Code]
        INVALID_ARGUMENTS: _ClassVar[ToolError.Code]
        NOT_ALLOWED: _ClassVar[ToolError.Code]
        TIMEOUT: _ClassVar[ToolError.Code]
        LIMIT_EXCEEDED: _ClassVar[ToolError.Code]
        UPSTREAM_ERROR: _ClassVar[ToolError.Code]
        EXECUTION_ERROR: _ClassVar[ToolError.Code]
        UNKNOWN_TOOL: _ClassVar[ToolError.Code]
    CODE_UNSPECIFIED: ToolError.Code
    INVALID_ARGUMENTS: ToolError.Code
    NOT_ALLOWED: ToolError.Code
    TIMEOUT: ToolError.Code
    LIMIT_EXCEEDED: ToolError.Code
    UPSTREAM_ERROR: ToolError.Code
    EXECUTION_ERROR: ToolError.Code
    UNKNOWN_TOOL: ToolError.Code
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    code: ToolError.Code
    message: str
    path: str
    retryable: bool
    def __init__(self, code: _Optional[_Union[ToolError.Code, str]] = ..., message: _Optional[str] = ..., path: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class InvokeResponse(_message.Message):
    __slots__ = ("result", "error", "duration_ms")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    result: ToolResult
    error: ToolError
    duration_ms: float
    def __init__(self, result: _Optional[_Union[ToolResult, _Mapping]] = ..., error: _Optional[_Union[ToolError, _Mapping]] = ..., duration_ms: _Optional[float] = ...) -> None: ...
