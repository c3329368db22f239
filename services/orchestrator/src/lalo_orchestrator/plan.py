"""Plans: the JSON schema a planner model must follow, parsing, and result references.

A plan is ``{"steps": [...]}`` where each step is one of

- ``{"kind": "tool", "tool": <name>, "arguments": {...}}``
- ``{"kind": "model", "prompt": "..."}``
- ``{"kind": "final", "answer": "..."}``

Prompts, answers and string arguments may reference earlier results as ``{{step_N}}``
(the text result of step N of the same plan, 1-based) and the user's request as
``{{input}}``. Every string and array in the schema is bounded, so even a random-weight
model under constrained decoding produces a finite, valid plan.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from lalo_orchestrator.clients import ToolInfo
from lalo_orchestrator.states import StepKind
from lalo_orchestrator.store import PlannedStep

REFERENCE = re.compile(r"\{\{\s*(step_(\d+)|input)\s*\}\}")


class PlanInvalid(Exception):
    """The planner's output is not a usable plan."""


def bound_schema(schema: Any, max_chars: int, max_items: int = 4) -> Any:
    """A copy of a tool's argument schema with every string and array bounded."""
    if not isinstance(schema, dict):
        return schema
    out = copy.deepcopy(schema)
    kinds = out.get("type")
    kind_set = set(kinds) if isinstance(kinds, list) else {kinds}
    if "string" in kind_set and "enum" not in out and "const" not in out:
        out["maxLength"] = min(int(out.get("maxLength", max_chars)), max_chars)
    if "array" in kind_set:
        out["maxItems"] = min(int(out.get("maxItems", max_items)), max_items)
        if "items" in out:
            out["items"] = bound_schema(out["items"], max_chars, max_items)
    if "object" in kind_set:
        properties = out.get("properties", {})
        out["properties"] = {
            name: bound_schema(value, max_chars, max_items) for name, value in properties.items()
        }
        # Free-form extra keys would be unbounded for a constrained decoder.
        out["additionalProperties"] = False
    for key in ("anyOf", "oneOf", "allOf"):
        if key in out:
            out[key] = [bound_schema(s, max_chars, max_items) for s in out[key]]
    return out


def plan_schema(
    tools: list[ToolInfo], *, max_steps: int, max_chars: int, max_arg_chars: int
) -> dict[str, Any]:
    text = {"type": "string", "minLength": 1, "maxLength": max_chars}
    variants: list[dict[str, Any]] = []
    for tool in tools:
        arguments = bound_schema(
            tool.parameters or {"type": "object", "properties": {}}, max_arg_chars
        )
        arguments.setdefault("type", "object")
        variants.append(
            {
                "type": "object",
                "properties": {
                    "kind": {"const": "tool"},
                    "tool": {"const": tool.name},
                    "arguments": arguments,
                },
                "required": ["kind", "tool", "arguments"],
                "additionalProperties": False,
            }
        )
    variants.append(
        {
            "type": "object",
            "properties": {"kind": {"const": "model"}, "prompt": text},
            "required": ["kind", "prompt"],
            "additionalProperties": False,
        }
    )
    variants.append(
        {
            "type": "object",
            "properties": {"kind": {"const": "final"}, "answer": text},
            "required": ["kind", "answer"],
            "additionalProperties": False,
        }
    )
    return {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_steps,
                "items": {"anyOf": variants},
            }
        },
        "required": ["steps"],
        "additionalProperties": False,
    }


def planner_messages(
    messages: list[dict[str, str]],
    tools: list[ToolInfo],
    history: list[dict[str, Any]],
    *,
    max_steps: int,
) -> list[dict[str, str]]:
    """The conversation shown to the planner: instructions, tools, failures so far."""
    tool_lines = [
        f"- {t.name}: {t.description} Arguments (JSON Schema): {json.dumps(t.parameters)}"
        for t in tools
    ] or ["(no tools are available)"]
    lines = [
        "You plan how to answer the user's request in at most "
        f'{max_steps} steps. Reply with JSON only: {{"steps": [...]}}.',
        'A step is {"kind": "tool", "tool": NAME, "arguments": {...}} to call a tool, '
        '{"kind": "model", "prompt": TEXT} to ask a language model, or '
        '{"kind": "final", "answer": TEXT} to give the final answer (the last step).',
        "Write {{step_N}} in a prompt, answer or argument to use the result of step N, "
        "and {{input}} for the user's request.",
        "Tools:",
        *tool_lines,
    ]
    if history:
        lines.append("Earlier attempts failed; plan around these errors:")
        lines.extend(
            f"- plan {h.get('plan_version')}, step {h.get('step')}: {h.get('error')}"
            for h in history[-5:]
        )
    return [{"role": "system", "content": "\n".join(lines)}, *messages]


def parse_plan(text: str, tools: list[ToolInfo], *, max_steps: int) -> list[PlannedStep]:
    """Validate a planner reply; the plan always ends with exactly one final step."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PlanInvalid(f"plan is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise PlanInvalid('plan must be an object with a "steps" array')
    raw_steps = data["steps"]
    if not raw_steps:
        raise PlanInvalid("plan has no steps")
    known = {t.name for t in tools}
    planned: list[PlannedStep] = []
    for number, raw in enumerate(raw_steps, start=1):
        if not isinstance(raw, dict):
            raise PlanInvalid(f"step {number} is not an object")
        kind = raw.get("kind")
        if kind == "tool":
            name = raw.get("tool")
            arguments = raw.get("arguments", {})
            if name not in known:
                raise PlanInvalid(f"step {number} uses unknown or disallowed tool {name!r}")
            if not isinstance(arguments, dict):
                raise PlanInvalid(f"step {number}: arguments must be an object")
            _check_references(arguments, number)
            planned.append(PlannedStep(StepKind.TOOL, tool=str(name), arguments=arguments))
        elif kind == "model":
            prompt = raw.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise PlanInvalid(f"step {number}: a model step needs a prompt")
            _check_references(prompt, number)
            planned.append(PlannedStep(StepKind.MODEL, prompt=prompt))
        elif kind == "final":
            answer = raw.get("answer", "")
            if not isinstance(answer, str):
                raise PlanInvalid(f"step {number}: answer must be text")
            _check_references(answer, number)
            planned.append(PlannedStep(StepKind.FINAL, prompt=answer))
            break  # anything after the final answer is never run
        else:
            raise PlanInvalid(f"step {number} has unknown kind {kind!r}")
    if planned[-1].kind is not StepKind.FINAL:
        # No explicit answer: the last step's result is the answer.
        planned.append(PlannedStep(StepKind.FINAL, prompt=""))
    if len(planned) - 1 > max_steps:
        raise PlanInvalid(f"plan has {len(planned) - 1} steps; at most {max_steps} are allowed")
    return planned


def _check_references(value: Any, position: int) -> None:
    for text in _strings(value):
        for match in REFERENCE.finditer(text):
            if match.group(2) is not None and not 1 <= int(match.group(2)) < position:
                raise PlanInvalid(
                    f"step {position} refers to {match.group(0)}, which is not an earlier step"
                )


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def render(template: str, results: Mapping[int, str], user_input: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group(1) == "input":
            return user_input
        return results.get(int(match.group(2)), "")

    return REFERENCE.sub(substitute, template)


def render_arguments(value: Any, results: Mapping[int, str], user_input: str) -> Any:
    if isinstance(value, str):
        return render(value, results, user_input)
    if isinstance(value, dict):
        return {k: render_arguments(v, results, user_input) for k, v in value.items()}
    if isinstance(value, list):
        return [render_arguments(v, results, user_input) for v in value]
    return value


def last_user_message(messages: list[dict[str, str]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message.get("content", "")
    return messages[-1].get("content", "") if messages else ""
