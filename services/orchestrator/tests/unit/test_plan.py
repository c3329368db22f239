"""Plan schema bounds, plan parsing and result references."""

from __future__ import annotations

import json

import pytest
from lalo_orchestrator.clients import ToolInfo
from lalo_orchestrator.plan import (
    PlanInvalid,
    bound_schema,
    parse_plan,
    plan_schema,
    planner_messages,
    render,
    render_arguments,
)
from lalo_orchestrator.states import StepKind

CALC = ToolInfo(
    "calculator",
    "Exact arithmetic.",
    {
        "type": "object",
        "properties": {
            "expression": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["expression"],
    },
)


def _walk(schema, found):
    if isinstance(schema, dict):
        found.append(schema)
        for value in schema.values():
            _walk(value, found)
    elif isinstance(schema, list):
        for value in schema:
            _walk(value, found)
    return found


def test_every_string_and_array_in_the_plan_schema_is_bounded():
    schema = plan_schema([CALC], max_steps=4, max_chars=100, max_arg_chars=50)
    nodes = _walk(schema, [])
    strings = [n for n in nodes if n.get("type") == "string" and "const" not in n]
    arrays = [n for n in nodes if n.get("type") == "array"]
    assert strings
    assert arrays
    assert all(0 < n["maxLength"] <= 100 for n in strings)
    assert all(0 < n["maxItems"] <= 4 for n in arrays)
    objects = [n for n in nodes if n.get("type") == "object"]
    assert all(n.get("additionalProperties") is False for n in objects)


def test_bound_schema_keeps_tighter_limits_and_enums():
    schema = {"type": "string", "maxLength": 5}
    assert bound_schema(schema, 50)["maxLength"] == 5
    assert "maxLength" not in bound_schema({"type": "string", "enum": ["a"]}, 50)


def test_parse_plan_accepts_all_step_kinds_and_appends_a_final_step():
    text = json.dumps(
        {
            "steps": [
                {"kind": "tool", "tool": "calculator", "arguments": {"expression": "1+1"}},
                {"kind": "model", "prompt": "explain {{step_1}}"},
            ]
        }
    )
    plan = parse_plan(text, [CALC], max_steps=4)
    assert [s.kind for s in plan] == [StepKind.TOOL, StepKind.MODEL, StepKind.FINAL]
    assert plan[0].arguments == {"expression": "1+1"}


def test_steps_after_the_final_answer_are_dropped():
    text = json.dumps(
        {"steps": [{"kind": "final", "answer": "done"}, {"kind": "model", "prompt": "more"}]}
    )
    plan = parse_plan(text, [], max_steps=4)
    assert [s.kind for s in plan] == [StepKind.FINAL]


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ("{", "not JSON"),
        ("[]", '"steps" array'),
        ('{"steps": []}', "no steps"),
        ('{"steps": [1]}', "not an object"),
        ('{"steps": [{"kind": "shell"}]}', "unknown kind"),
        ('{"steps": [{"kind": "tool", "tool": "rm", "arguments": {}}]}', "disallowed tool"),
        (
            '{"steps": [{"kind": "tool", "tool": "calculator", "arguments": 3}]}',
            "must be an object",
        ),
        ('{"steps": [{"kind": "model", "prompt": " "}]}', "needs a prompt"),
        ('{"steps": [{"kind": "model", "prompt": "{{step_1}}"}]}', "not an earlier step"),
        (
            '{"steps": [{"kind": "model", "prompt": "a"},'
            ' {"kind": "model", "prompt": "{{step_3}}"}]}',
            "not an earlier step",
        ),
    ],
)
def test_unusable_plans_are_refused_with_a_reason(plan, message):
    with pytest.raises(PlanInvalid, match=message):
        parse_plan(plan, [CALC], max_steps=4)


def test_too_many_steps_are_refused():
    text = json.dumps({"steps": [{"kind": "model", "prompt": "x"}] * 3})
    with pytest.raises(PlanInvalid, match="at most 2"):
        parse_plan(text, [], max_steps=2)


def test_references_render_earlier_results_and_the_input():
    results = {1: "four", 2: "IV"}
    assert (
        render("{{step_1}} or {{ step_2 }} for {{input}}", results, "2+2") == "four or IV for 2+2"
    )
    args = {"a": ["{{step_2}}", 3], "b": {"c": "{{input}}"}}
    assert render_arguments(args, results, "q") == {"a": ["IV", 3], "b": {"c": "q"}}


def test_planner_sees_tools_and_earlier_failures():
    messages = planner_messages(
        [{"role": "user", "content": "hi"}],
        [CALC],
        [{"plan_version": 1, "step": 2, "error": "division by zero"}],
        max_steps=3,
    )
    system = messages[0]["content"]
    assert "calculator" in system
    assert "division by zero" in system
    assert "at most 3" in system
    assert messages[1] == {"role": "user", "content": "hi"}


def test_any_plan_the_schema_allows_has_an_acceptable_length():
    # The schema's bound and the parser's agree: a reply at the schema's limit is valid.
    schema = plan_schema([], max_steps=2, max_chars=10, max_arg_chars=5)
    limit = schema["properties"]["steps"]["maxItems"]
    reply = json.dumps({"steps": [{"kind": "model", "prompt": "x"}] * limit})
    assert len(parse_plan(reply, [], max_steps=2)) == limit + 1
