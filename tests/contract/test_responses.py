"""The Responses API (POST /v1/responses) with the official SDK: the same model and router as
chat completions, answered as Response objects and OpenAI's streaming events; stored
responses retrieved, listed, continued with previous_response_id and deleted (function
calls: in test_tool_calls.py, on a model whose template offers tools)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from lalo_testing.stack import Stack

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


def test_a_text_input_gets_a_completed_response(client: openai.OpenAI, stack: Stack) -> None:
    response = client.responses.create(
        model=stack.model_id,
        input="Say hello.",
        instructions="Be brief.",
        max_output_tokens=64,
        temperature=0,
        metadata={"ticket": "42"},
    )
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.model == stack.model_id
    assert response.store is True  # kept, as OpenAI keeps it, unless store=False
    assert response.metadata == {"ticket": "42"}
    assert response.instructions == "Be brief."
    message = response.output[0]
    assert message.type == "message"
    assert message.role == "assistant"
    assert response.output_text == message.content[0].text  # type: ignore[union-attr]
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.status in ("completed", "incomplete")


def test_max_output_tokens_makes_an_incomplete_response(
    client: openai.OpenAI, stack: Stack
) -> None:
    response = client.responses.create(
        model=stack.model_id, input="Tell me a long story.", max_output_tokens=3, temperature=0
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None
    assert response.usage.output_tokens == 3


def test_the_same_answer_as_chat_completions(client: openai.OpenAI, stack: Stack) -> None:
    """Greedy decoding of the same conversation: both APIs front the same model call."""
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
    ]
    chat = client.chat.completions.create(
        model=stack.model_id, messages=messages, max_tokens=6, temperature=0
    )
    response = client.responses.create(
        model=stack.model_id,
        instructions="Be brief.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Name a colour."}]}],
        max_output_tokens=6,
        temperature=0,
    )
    assert response.output_text == chat.choices[0].message.content


def test_streamed_events_in_order_and_the_sdk_helper(client: openai.OpenAI, stack: Stack) -> None:
    events = list(
        client.responses.create(
            model=stack.model_id, input="Hello!", max_output_tokens=8, temperature=0, stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = [e for e in events if e.type == "response.output_text.done"]
    assert len(done) == 1
    assert done[0].text == deltas
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == deltas
    assert final.usage is not None
    assert final.usage.output_tokens > 0
    if kinds[-1] == "response.incomplete":
        assert final.incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]


def test_the_sdk_stream_helper_reads_a_completed_response(
    client: openai.OpenAI, stack: Stack
) -> None:
    """The SDK's own accumulating helper checks the event sequence as it goes (a JSON
    schema makes the random model finish on its own, so the response completes)."""
    with client.responses.stream(
        model=stack.model_id,
        input="Answer as JSON.",
        max_output_tokens=30,
        temperature=0,
        text={"format": {"type": "json_schema", "name": "answer", "schema": SCHEMA}},
    ) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == deltas
    assert isinstance(json.loads(deltas)["ok"], bool)


def test_a_json_schema_text_format_constrains_the_output(
    client: openai.OpenAI, stack: Stack
) -> None:
    response = client.responses.create(
        model=stack.model_id,
        input="Answer as JSON.",
        max_output_tokens=30,
        temperature=0,
        text={"format": {"type": "json_schema", "name": "answer", "schema": SCHEMA}},
    )
    assert response.status == "completed"
    assert isinstance(json.loads(response.output_text)["ok"], bool)


def test_the_route_headers_come_with_it(http: httpx.Client, stack: Stack) -> None:
    reply = http.post(
        "/v1/responses", json={"model": "auto", "input": "hi there", "max_output_tokens": 2}
    )
    assert reply.status_code == 200
    assert reply.headers["x-lalo-model"] == reply.json()["model"]
    assert "x-lalo-route" in reply.headers


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"previous_response_id": ""}, "previous_response_id", ""),
        ({"conversation": "conv_1"}, "conversation", "previous_response_id"),
        ({"input": ""}, "input", "empty"),
        ({"input": [{"type": "image_generation_call", "id": "x"}]}, "input", ""),
        ({"tool_choice": "required"}, "tool_choice", "only allowed when tools"),
        ({"background": True}, "background", "stream instead"),
        ({"max_output_tokens": 10**9}, "max_output_tokens", "this gateway accepts at most"),
        # An item's error names the item's field (not the union member that failed).
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id", ""),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", ""),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content[0].type",
            "",
        ),
        ({"tools": [{"type": "function", "name": "a b"}]}, "tools[0].name", ""),
        (
            {"text": {"format": {"type": "json_schema", "name": "x"}}},
            "text",
            "needs a name and a schema",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    http: httpx.Client, stack: Stack, fields: dict[str, Any], param: str, words: str
) -> None:
    reply = http.post("/v1/responses", json={"model": stack.model_id, "input": "hi", **fields})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["param"] or "").startswith(param), error
    assert words in error["message"]
    if param.startswith("input["):
        assert error["param"] == param


@pytest.mark.parametrize("stream", [False, True])
def test_an_unknown_model_is_404_before_any_event(http: httpx.Client, stream: bool) -> None:
    """Streamed or not, a request the router refuses is a plain HTTP error, not a 200
    stream that fails (the route decision is awaited before the response starts)."""
    reply = http.post(
        "/v1/responses", json={"model": "no-such-model", "input": "hi", "stream": stream}
    )
    assert reply.status_code == 404, reply.text
    assert reply.json()["error"]["code"] == "model_not_found"


def test_a_stored_response_is_read_listed_continued_and_deleted(
    client: openai.OpenAI, stack: Stack
) -> None:
    first = client.responses.create(
        model=stack.model_id, input="Name a colour.", max_output_tokens=6, temperature=0
    )
    assert client.responses.retrieve(first.id) == first
    items = list(client.responses.input_items.list(first.id))
    assert [(i.type, i.role) for i in items] == [("message", "user")]  # type: ignore[union-attr]
    assert items[0].content[0].text == "Name a colour."  # type: ignore[union-attr]

    # Continuing it is the same model call as sending the whole conversation (greedy).
    follow_up = client.responses.create(
        model=stack.model_id,
        previous_response_id=first.id,
        input="And another?",
        max_output_tokens=6,
        temperature=0,
    )
    whole = client.responses.create(
        model=stack.model_id,
        input=[
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "And another?"},
        ],
        max_output_tokens=6,
        temperature=0,
        store=False,
    )
    assert follow_up.previous_response_id == first.id
    assert follow_up.output_text == whole.output_text
    assert follow_up.usage is not None
    assert whole.usage is not None
    assert follow_up.usage.input_tokens == whole.usage.input_tokens

    deleted = client.responses.delete(first.id)
    assert deleted is None  # the SDK returns nothing; the wire said deleted (next test)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as caught:  # its continuation lost its start
        client.responses.create(
            model=stack.model_id, previous_response_id=follow_up.id, input="More?"
        )
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert first.id in caught.value.message


def test_delete_and_unknown_ids_over_the_wire(http: httpx.Client, stack: Stack) -> None:
    created = http.post("/v1/responses", json={"model": stack.model_id, "input": "hi"}).json()
    reply = http.delete(f"/v1/responses/{created['id']}")
    assert reply.json() == {"id": created["id"], "object": "response", "deleted": True}
    for method, path in (
        ("DELETE", f"/v1/responses/{created['id']}"),
        ("GET", "/v1/responses/resp_nope"),
        ("GET", "/v1/responses/resp_nope/input_items"),
    ):
        reply = http.request(method, path)
        assert reply.status_code == 404, (method, path, reply.text)
        assert reply.json()["error"]["code"] == "response_not_found"
    reply = http.get(f"/v1/responses/{created['id']}/input_items", params={"limit": 0})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "limit"


def test_store_false_is_not_kept(client: openai.OpenAI, stack: Stack) -> None:
    response = client.responses.create(
        model=stack.model_id, input="hi", max_output_tokens=2, store=False
    )
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model=stack.model_id, previous_response_id=response.id, input="x")
    assert caught.value.body["code"] == "previous_response_not_found"  # type: ignore[index]


def test_a_streamed_response_can_be_continued_as_soon_as_it_ends(
    client: openai.OpenAI, stack: Stack
) -> None:
    events = list(
        client.responses.create(
            model=stack.model_id, input="Hello!", max_output_tokens=4, temperature=0, stream=True
        )
    )
    final = events[-1].response  # type: ignore[union-attr]
    assert final.store is True
    assert client.responses.retrieve(final.id).output_text == final.output_text
    again = client.responses.create(
        model=stack.model_id, previous_response_id=final.id, input="Go on.", max_output_tokens=2
    )
    assert again.previous_response_id == final.id


def test_another_tenants_responses_are_invisible(
    client: openai.OpenAI, stack: Stack, stack_role_keys: dict[str, str]
) -> None:
    mine = client.responses.create(model=stack.model_id, input="secret plans", max_output_tokens=2)
    created = httpx.post(
        f"{stack.base_url}/admin/keys",
        json={"owner": "another-team", "role": "developer"},
        headers={"authorization": f"Bearer {stack_role_keys['admin']}"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    with openai.OpenAI(
        base_url=stack.base_url, api_key=created.json()["key"], max_retries=0
    ) as other:
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.input_items.list(mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.create(model=stack.model_id, previous_response_id=mine.id, input="x")
    assert client.responses.retrieve(mine.id).id == mine.id  # untouched
