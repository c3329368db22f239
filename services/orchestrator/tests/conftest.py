"""Fixtures shared by the orchestrator tests: scripted model and tool clients."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from lalo_orchestrator.clients import Generation, StepFailed, ToolInfo, ToolOutput, TransientError

ECHO = ToolInfo(
    "echo",
    "Returns its text.",
    {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
)


@dataclass
class ScriptedModel:
    """Returns queued plans to the planner and 'model:<prompt>' to model steps."""

    plans: list[Any] = field(default_factory=list)
    tokens_per_call: int = 10
    calls: list[dict[str, Any]] = field(default_factory=list)
    fail_with: list[Exception] = field(default_factory=list)

    def generate(self, **kwargs: Any) -> Generation:
        self.calls.append(kwargs)
        if self.fail_with:
            raise self.fail_with.pop(0)
        if kwargs["json_schema"] is not None:
            plan = (
                self.plans.pop(0) if self.plans else {"steps": [{"kind": "final", "answer": "x"}]}
            )
            text = plan if isinstance(plan, str) else json.dumps(plan)
        else:
            text = "model:" + kwargs["messages"][-1]["content"]
        half = self.tokens_per_call // 2
        return Generation(text, half, self.tokens_per_call - half, "stop")


@dataclass
class RecordingTools:
    """Echo tool that records each invocation by idempotency key."""

    tools: list[ToolInfo] = field(default_factory=lambda: [ECHO])
    invocations: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, list[Exception]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    hook: Any = None

    def list_tools(self, names: list[str], *, timeout_s: float) -> list[ToolInfo]:
        return [t for t in self.tools if not names or t.name in names]

    def invoke(self, **kwargs: Any) -> ToolOutput:
        with self.lock:
            self.invocations.append(kwargs)
        if self.hook is not None:
            self.hook(kwargs)
        text = str(kwargs["arguments"].get("text", ""))
        queued = self.errors.get(text)
        if queued:
            raise queued.pop(0)
        return ToolOutput(content={"echo": text}, text=text)


@pytest.fixture
def scripted_model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
def recording_tools() -> RecordingTools:
    return RecordingTools()


@pytest.fixture
def fakes() -> Any:
    """The fake classes and errors, for tests that build their own."""

    class Fakes:
        ScriptedModel = ScriptedModel
        RecordingTools = RecordingTools
        ToolInfo = ToolInfo
        ECHO = ECHO
        StepFailed = StepFailed
        TransientError = TransientError

    return Fakes
