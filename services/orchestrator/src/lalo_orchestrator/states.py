"""The workflow and step state machines: the only transitions the store will write."""

from __future__ import annotations

from enum import StrEnum

from lalo_common.errors import FailedPrecondition


class WorkflowState(StrEnum):
    PENDING = "pending"
    PLANNING = "planning"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_WORKFLOW_STATES


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in (StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED)


class StepKind(StrEnum):
    TOOL = "tool"
    MODEL = "model"
    FINAL = "final"


TERMINAL_WORKFLOW_STATES = frozenset(
    {
        WorkflowState.SUCCEEDED,
        WorkflowState.FAILED,
        WorkflowState.CANCELLED,
        WorkflowState.BUDGET_EXCEEDED,
    }
)

_ENDINGS = {WorkflowState.FAILED, WorkflowState.CANCELLED, WorkflowState.BUDGET_EXCEEDED}

WORKFLOW_TRANSITIONS: dict[WorkflowState, frozenset[WorkflowState]] = {
    WorkflowState.PENDING: frozenset({WorkflowState.PLANNING, *_ENDINGS}),
    # PLANNING -> RUNNING with a plan; a failed step sends RUNNING back to PLANNING.
    WorkflowState.PLANNING: frozenset({WorkflowState.RUNNING, *_ENDINGS}),
    WorkflowState.RUNNING: frozenset({WorkflowState.PLANNING, WorkflowState.SUCCEEDED, *_ENDINGS}),
    WorkflowState.SUCCEEDED: frozenset(),
    WorkflowState.FAILED: frozenset(),
    WorkflowState.CANCELLED: frozenset(),
    WorkflowState.BUDGET_EXCEEDED: frozenset(),
}

STEP_TRANSITIONS: dict[StepState, frozenset[StepState]] = {
    StepState.PENDING: frozenset({StepState.RUNNING, StepState.SKIPPED}),
    # RUNNING -> RUNNING is a new attempt (a transient failure, or a re-delivery after
    # the worker running it died); the attempt counter says which.
    StepState.RUNNING: frozenset(
        {StepState.RUNNING, StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED}
    ),
    StepState.SUCCEEDED: frozenset(),
    StepState.FAILED: frozenset(),
    StepState.SKIPPED: frozenset(),
}


class IllegalTransition(FailedPrecondition):
    """A state change the machine does not allow (e.g. out of a terminal state)."""


def check_workflow_transition(current: WorkflowState, target: WorkflowState) -> None:
    if target not in WORKFLOW_TRANSITIONS[current]:
        raise IllegalTransition(f"workflow cannot go from {current.value} to {target.value}")


def check_step_transition(current: StepState, target: StepState) -> None:
    if target not in STEP_TRANSITIONS[current]:
        raise IllegalTransition(f"step cannot go from {current.value} to {target.value}")
