"""Request validation and budgets at the API core."""

from __future__ import annotations

import pytest
from lalo_common.errors import InvalidArgument
from lalo_orchestrator.api import BudgetRequest, WorkflowApi, resolve_budgets
from lalo_orchestrator.settings import OrchestratorSettings

SETTINGS = OrchestratorSettings(max_steps=5, ceiling_steps=10, max_replans=2)


def test_unset_budgets_take_defaults_and_zero_replans_is_kept():
    budgets = resolve_budgets(SETTINGS, BudgetRequest(max_replans=0))
    assert budgets.max_steps == 5
    assert budgets.max_replans == 0
    assert budgets.max_wall_time_s == SETTINGS.max_wall_time_s


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (BudgetRequest(max_steps=11), "max_steps must be at most 10"),
        (BudgetRequest(max_steps=0), "max_steps must be at least 1"),
        (BudgetRequest(max_wall_time_s=0.0), "max_wall_time_s must be at least"),
        (BudgetRequest(max_tokens=0), "max_tokens must be at least 1"),
    ],
)
def test_budgets_outside_the_limits_are_refused(request_, message):
    with pytest.raises(InvalidArgument, match=message):
        resolve_budgets(SETTINGS, request_)


class NoStore:
    def create(self, **_kwargs):  # pragma: no cover - validation fails first
        raise AssertionError("must not be called")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"owner": ""}, "owner is required"),
        ({"messages": []}, "must not be empty"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "role must be one of"),
        ({"messages": [{"role": "system", "content": "x"}]}, "non-empty user message"),
        ({"allowed_tools": ["../etc"]}, "invalid tool name"),
    ],
)
def test_bad_requests_are_refused(kwargs, message):
    api = WorkflowApi(NoStore(), SETTINGS, lambda *_: None)  # type: ignore[arg-type]
    arguments = {
        "owner": "alice",
        "messages": [{"role": "user", "content": "hi"}],
        "allowed_tools": [],
        "budgets": BudgetRequest(),
    } | kwargs
    with pytest.raises(InvalidArgument, match=message):
        api.create(**arguments)
