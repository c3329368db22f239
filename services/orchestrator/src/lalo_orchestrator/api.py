"""The workflow API core: validation and budgets, independent of gRPC."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from lalo_common.errors import InvalidArgument

from lalo_orchestrator.settings import OrchestratorSettings
from lalo_orchestrator.store import Budgets, WorkflowRecord, WorkflowStore

ROLES = frozenset({"system", "user", "assistant", "tool"})
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_MESSAGES = 256
MAX_MESSAGE_CHARS = 100_000


@dataclass(frozen=True)
class BudgetRequest:
    """Requested limits; None takes the default."""

    max_steps: int | None = None
    max_wall_time_s: float | None = None
    max_tokens: int | None = None
    max_replans: int | None = None


def resolve_budgets(settings: OrchestratorSettings, request: BudgetRequest) -> Budgets:
    def pick(name: str, value: float | None, default: float, ceiling: float, least: float) -> float:
        if value is None:
            return default
        if value < least:
            raise InvalidArgument(f"budgets.{name} must be at least {least:g}")
        if value > ceiling:
            raise InvalidArgument(f"budgets.{name} must be at most {ceiling:g}")
        return value

    return Budgets(
        max_steps=int(
            pick("max_steps", request.max_steps, settings.max_steps, settings.ceiling_steps, 1)
        ),
        max_wall_time_s=pick(
            "max_wall_time_s",
            request.max_wall_time_s,
            settings.max_wall_time_s,
            settings.ceiling_wall_time_s,
            0.001,
        ),
        max_tokens=int(
            pick("max_tokens", request.max_tokens, settings.max_tokens, settings.ceiling_tokens, 1)
        ),
        max_replans=int(
            pick(
                "max_replans",
                request.max_replans,
                settings.max_replans,
                settings.ceiling_replans,
                0,
            )
        ),
    )


class WorkflowApi:
    def __init__(
        self,
        store: WorkflowStore,
        settings: OrchestratorSettings,
        enqueue: Callable[[str, str, float], None],
    ) -> None:
        self.store = store
        self.settings = settings
        self.enqueue = enqueue

    def create(
        self,
        *,
        owner: str,
        messages: list[dict[str, str]],
        allowed_tools: list[str],
        budgets: BudgetRequest,
        model: str = "",
        request_id: str = "",
    ) -> WorkflowRecord:
        if not owner:
            raise InvalidArgument("owner is required")
        if not messages:
            raise InvalidArgument("messages must not be empty")
        if len(messages) > MAX_MESSAGES:
            raise InvalidArgument(f"at most {MAX_MESSAGES} messages are allowed")
        for index, message in enumerate(messages):
            if message.get("role") not in ROLES:
                raise InvalidArgument(
                    f"messages[{index}].role must be one of {', '.join(sorted(ROLES))}"
                )
            if len(message.get("content", "")) > MAX_MESSAGE_CHARS:
                raise InvalidArgument(f"messages[{index}].content is too long")
        if not any(m["role"] == "user" and m.get("content", "").strip() for m in messages):
            raise InvalidArgument("messages need at least one non-empty user message")
        for name in allowed_tools:
            if not TOOL_NAME.match(name):
                raise InvalidArgument(f"allowed_tools has an invalid tool name {name!r}")
        record = self.store.create(
            owner=owner,
            messages=[{"role": m["role"], "content": m.get("content", "")} for m in messages],
            allowed_tools=sorted(set(allowed_tools)),
            budgets=resolve_budgets(self.settings, budgets),
            model=model,
            request_id=request_id,
        )
        # Should this enqueue be lost (a crash right here), the sweeper finds the
        # workflow pending and enqueues it.
        self.enqueue(record.id, record.dispatch, 0.0)
        return record
