"""Only legal transitions are written; everything else is refused."""

from __future__ import annotations

import pytest
from lalo_orchestrator.states import (
    STEP_TRANSITIONS,
    TERMINAL_WORKFLOW_STATES,
    WORKFLOW_TRANSITIONS,
    IllegalTransition,
    StepState,
    WorkflowState,
    check_step_transition,
    check_workflow_transition,
)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_WORKFLOW_STATES))
@pytest.mark.parametrize("target", list(WorkflowState))
def test_nothing_leaves_a_terminal_workflow_state(terminal, target):
    with pytest.raises(IllegalTransition, match=f"from {terminal.value} to {target.value}"):
        check_workflow_transition(terminal, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (WorkflowState.PENDING, WorkflowState.RUNNING),  # never run without a plan
        (WorkflowState.PENDING, WorkflowState.SUCCEEDED),
        (WorkflowState.PLANNING, WorkflowState.SUCCEEDED),
        (WorkflowState.PLANNING, WorkflowState.PENDING),
        (WorkflowState.RUNNING, WorkflowState.PENDING),
    ],
)
def test_illegal_workflow_transitions_are_refused(current, target):
    with pytest.raises(IllegalTransition):
        check_workflow_transition(current, target)


def test_every_open_state_can_be_cancelled_failed_or_run_out_of_budget():
    for state in WorkflowState:
        if state.terminal:
            continue
        for ending in (
            WorkflowState.CANCELLED,
            WorkflowState.FAILED,
            WorkflowState.BUDGET_EXCEEDED,
        ):
            check_workflow_transition(state, ending)
    assert set(WORKFLOW_TRANSITIONS) == set(WorkflowState)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (StepState.PENDING, StepState.SUCCEEDED),  # a result needs a recorded attempt
        (StepState.PENDING, StepState.FAILED),
        (StepState.SUCCEEDED, StepState.RUNNING),  # a completed step never runs again
        (StepState.SUCCEEDED, StepState.SUCCEEDED),
        (StepState.FAILED, StepState.RUNNING),
        (StepState.SKIPPED, StepState.RUNNING),
    ],
)
def test_illegal_step_transitions_are_refused(current, target):
    with pytest.raises(IllegalTransition):
        check_step_transition(current, target)


def test_step_transition_table_covers_every_state():
    assert set(STEP_TRANSITIONS) == set(StepState)
    check_step_transition(StepState.RUNNING, StepState.RUNNING)  # a new attempt
