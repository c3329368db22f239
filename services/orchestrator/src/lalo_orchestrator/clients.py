"""Clients of the model (``lalo.inference.v1``) and tools (``lalo.tools.v1``) services.

Workers are synchronous Celery processes, so these use blocking gRPC channels, one per
process. Failures are sorted here into transient ones (retried with backoff) and step
failures (shown to the planner).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from lalo.inference.v1 import inference_pb2, inference_pb2_grpc
from lalo.tools.v1 import tools_pb2, tools_pb2_grpc
from lalo_common.auth import REQUEST_ID_METADATA, SERVICE_TOKEN_METADATA
from lalo_common.grpc_client import CLIENT_OPTIONS

TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


class TransientError(Exception):
    """Worth retrying unchanged after a backoff (a backend down, a timeout)."""


class StepFailed(Exception):
    """The step cannot succeed as written; the planner gets the message."""


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ToolInfo:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolOutput:
    content: Any
    text: str
    truncated: bool = False


class ModelClient(Protocol):
    def generate(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float,
        json_schema: dict[str, Any] | None,
        timeout_s: float,
        request_id: str,
    ) -> Generation: ...


class ToolClient(Protocol):
    def list_tools(self, names: list[str], *, timeout_s: float) -> list[ToolInfo]: ...

    def invoke(
        self,
        *,
        tool: str,
        arguments: dict[str, Any],
        workflow_id: str,
        step_id: str,
        idempotency_key: str,
        allowed_tools: list[str],
        timeout_s: float,
        request_id: str,
    ) -> ToolOutput: ...


def _classify(exc: grpc.RpcError, what: str) -> Exception:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    message = f"{what} failed: {code.name}: {details}"
    return TransientError(message) if code in TRANSIENT_CODES else StepFailed(message)


class _Channel:
    """A blocking channel per process (gRPC channels do not survive fork)."""

    def __init__(self, target: str, service_token: str) -> None:
        self._target = target
        self._token = service_token
        self._lock = threading.Lock()
        self._pid = 0
        self._channel: grpc.Channel | None = None

    def get(self) -> grpc.Channel:
        with self._lock:
            if self._channel is None or self._pid != os.getpid():
                self._channel = grpc.insecure_channel(self._target, options=CLIENT_OPTIONS)
                self._pid = os.getpid()
            return self._channel

    def metadata(self, request_id: str) -> list[tuple[str, str]]:
        items = [(SERVICE_TOKEN_METADATA, self._token)] if self._token else []
        if request_id:
            items.append((REQUEST_ID_METADATA, request_id))
        return items

    def close(self) -> None:
        with self._lock:
            if self._channel is not None and self._pid == os.getpid():
                self._channel.close()
            self._channel = None


class GrpcModelClient:
    def __init__(self, target: str, service_token: str = "") -> None:
        self._channel = _Channel(target, service_token)

    def generate(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float,
        json_schema: dict[str, Any] | None,
        timeout_s: float,
        request_id: str,
    ) -> Generation:
        sampling = inference_pb2.SamplingParams(max_tokens=max_tokens, temperature=temperature)
        if json_schema is not None:
            sampling.response_format.type = inference_pb2.ResponseFormat.JSON_SCHEMA
            sampling.response_format.json_schema = json.dumps(json_schema)
        request = inference_pb2.GenerateRequest(
            request_id=request_id,
            model=model,
            chat=inference_pb2.ChatInput(
                messages=[
                    inference_pb2.ChatMessage(role=m["role"], content=m["content"])
                    for m in messages
                ]
            ),
            sampling=sampling,
        )
        stub = inference_pb2_grpc.InferenceServiceStub(self._channel.get())
        parts: list[str] = []
        usage = inference_pb2.Usage()
        finish = "stop"
        try:
            for response in stub.Generate(
                request, timeout=max(timeout_s, 0.001), metadata=self._channel.metadata(request_id)
            ):
                which = response.WhichOneof("event")
                if which == "chunk":
                    parts.append(response.chunk.text)
                elif which == "complete":
                    usage = response.complete.usage
                    finish = inference_pb2.FinishReason.Name(response.complete.finish_reason)
                elif which == "error":
                    code = _status(response.error.code)
                    message = f"model call failed: {code.name}: {response.error.message}"
                    if code in TRANSIENT_CODES:
                        raise TransientError(message)
                    raise StepFailed(message)
        except grpc.RpcError as exc:
            raise _classify(exc, "model call") from exc
        return Generation(
            text="".join(parts),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            finish_reason=finish.removeprefix("FINISH_REASON_").lower(),
        )

    def close(self) -> None:
        self._channel.close()


class GrpcToolClient:
    def __init__(self, target: str, service_token: str = "") -> None:
        self._channel = _Channel(target, service_token)

    def list_tools(self, names: list[str], *, timeout_s: float) -> list[ToolInfo]:
        stub = tools_pb2_grpc.ToolsServiceStub(self._channel.get())
        try:
            response = stub.ListTools(
                tools_pb2.ListToolsRequest(names=names),
                timeout=max(timeout_s, 0.001),
                metadata=self._channel.metadata(""),
            )
        except grpc.RpcError as exc:
            raise _classify(exc, "listing tools") from exc
        tools = []
        for spec in response.tools:
            try:
                parameters = json.loads(spec.parameters_json or "{}")
            except ValueError:
                parameters = {}
            tools.append(ToolInfo(spec.name, spec.description, parameters))
        return tools

    def invoke(
        self,
        *,
        tool: str,
        arguments: dict[str, Any],
        workflow_id: str,
        step_id: str,
        idempotency_key: str,
        allowed_tools: list[str],
        timeout_s: float,
        request_id: str,
    ) -> ToolOutput:
        stub = tools_pb2_grpc.ToolsServiceStub(self._channel.get())
        request = tools_pb2.InvokeRequest(
            tool=tool,
            arguments_json=json.dumps(arguments),
            request_id=request_id,
            workflow_id=workflow_id,
            step_id=step_id,
            idempotency_key=idempotency_key,
            allowed_tools=allowed_tools,
        )
        request.limits.timeout_s = max(timeout_s, 0.001)
        try:
            # The RPC deadline leaves the tool room to report its own timeout.
            response = stub.Invoke(
                request, timeout=timeout_s + 5.0, metadata=self._channel.metadata(request_id)
            )
        except grpc.RpcError as exc:
            raise _classify(exc, f"tool {tool}") from exc
        if response.WhichOneof("outcome") == "error":
            error = response.error
            code = tools_pb2.ToolError.Code.Name(error.code)
            where = f" at {error.path}" if error.path else ""
            message = f"tool {tool} error {code}{where}: {error.message}"
            if error.retryable:
                raise TransientError(message)
            raise StepFailed(message)
        result = response.result
        try:
            content = json.loads(result.content_json) if result.content_json else None
        except ValueError:
            content = result.content_json
        text = result.text or (result.content_json or "")
        return ToolOutput(content=content, text=text, truncated=result.truncated)

    def close(self) -> None:
        self._channel.close()


def _status(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN
