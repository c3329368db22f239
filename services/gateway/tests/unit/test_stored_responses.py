"""Stored responses: what is kept, how previous_response_id rebuilds a conversation, who may
read it, and every way a continuation can fail, on a real (SQLite) database migrated as the
gateway migrates it. Postgres runs the same store in tests/integration/test_stores.py; the
wire, with the official SDK, in tests/contract/test_responses.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo_gateway.db.engine import make_sessionmaker
from lalo_gateway.db.migrate import upgrade
from lalo_gateway.db.repositories import SqlResponseStore
from lalo_gateway.errors import APIError
from lalo_gateway.protocol import ResponsesRequest
from lalo_gateway.security.principal import Principal
from lalo_gateway.security.rbac import Role
from lalo_gateway.serving_responses import ServingResponses, router_request
from lalo_gateway.stored_responses import StoredResponse, input_items_of, items_page
from sqlalchemy import create_engine

ALICE = Principal(subject="alice", role=Role.DEVELOPER, kind="api_key", key_id="k-alice")
BOB = Principal(subject="bob", role=Role.DEVELOPER, kind="api_key", key_id="k-bob")


@pytest.fixture
def store(tmp_path: Path) -> SqlResponseStore:
    engine = create_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    upgrade(engine)
    return SqlResponseStore(make_sessionmaker(engine))


class RecordingRouter:
    """Answers every request with ``text`` and keeps the requests it was sent."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts) or ["ok"]
        self.requests: list[rpb.ChatRequest] = []

    async def chat(self, request: rpb.ChatRequest) -> Any:
        self.requests.append(request)
        text = self.texts[min(len(self.requests), len(self.texts)) - 1]
        yield rpb.ChatResponse(route=rpb.RouteDecision(pool="small", model="tiny"))
        yield rpb.ChatResponse(chunk=ipb.GenerateChunk(text=text))
        yield rpb.ChatResponse(
            complete=ipb.GenerateComplete(
                finish_reason=ipb.FINISH_REASON_STOP,
                usage=ipb.Usage(prompt_tokens=4, completion_tokens=1),
            )
        )


def body(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", "input": "hi", **fields})


async def create(
    serving: ServingResponses,
    db: SqlResponseStore | None,
    principal: Principal = ALICE,
    max_items: int = 512,
    **fields: Any,
) -> dict[str, Any]:
    response = await serving.create(body(**fields), "req", principal, db, max_items)
    if fields.get("stream"):
        text = "".join([str(w) async for w in response.body_iterator])  # type: ignore[union-attr]
        last = text.strip().split("\n\n")[-1]
        event: dict[str, Any] = json.loads(last.split("data: ", 1)[1])
        return event["response"]  # type: ignore[no-any-return]
    return json.loads(bytes(response.body))  # type: ignore[no-any-return]


def conversation(request: rpb.ChatRequest) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in request.chat.messages]


async def test_a_continuation_replays_the_conversation_before_the_new_input(
    store: SqlResponseStore,
) -> None:
    router = RecordingRouter("Paris.", "About 2.1 million.", "Yes.")
    serving = ServingResponses(router)
    first = await create(
        serving, store, input="Capital of France?", instructions="Answer in one line."
    )
    assert first["store"] is True
    assert first["previous_response_id"] is None
    second = await create(serving, store, input="Population?", previous_response_id=first["id"])
    assert second["previous_response_id"] == first["id"]
    third = await create(serving, store, input="Sure?", previous_response_id=second["id"])
    # Instructions are each request's own (OpenAI's rule): the first ones are not replayed.
    assert conversation(router.requests[2]) == [
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("user", "Population?"),
        ("assistant", "About 2.1 million."),
        ("user", "Sure?"),
    ]
    assert (await create(serving, store, input="x", previous_response_id=third["id"]))["id"]
    stored = store.get("alice", third["id"])
    assert stored is not None
    assert stored.response == third  # what was returned is what is read back


async def test_function_calls_and_outputs_are_replayed_as_tool_turns(
    store: SqlResponseStore,
) -> None:
    calling = ServingResponses(
        _Scripted(
            [
                rpb.ChatResponse(route=rpb.RouteDecision(pool="small", model="tiny")),
                rpb.ChatResponse(
                    chunk=ipb.GenerateChunk(
                        tool_calls=[ipb.ToolCall(id="c1", name="add", arguments_json="{}")]
                    )
                ),
                rpb.ChatResponse(
                    complete=ipb.GenerateComplete(finish_reason=ipb.FINISH_REASON_TOOL_CALLS)
                ),
            ]
        )
    )
    tools = [{"type": "function", "name": "add", "parameters": {"type": "object"}}]
    first = await create(calling, store, input="2+3?", tools=tools)
    assert [item["type"] for item in first["output"]] == ["function_call"]
    router = RecordingRouter("5.")
    await create(
        ServingResponses(router),
        store,
        previous_response_id=first["id"],
        input=[{"type": "function_call_output", "call_id": "c1", "output": "5"}],
        tools=tools,
    )
    messages = router.requests[0].chat.messages
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assert [(c.id, c.name) for c in messages[1].tool_calls] == [("c1", "add")]
    assert messages[2].tool_call_id == "c1"


async def test_a_streamed_response_is_stored_before_its_last_event(
    store: SqlResponseStore,
) -> None:
    serving = ServingResponses(RecordingRouter("Hel", "lo"))
    final = await create(serving, store, stream=True)
    assert final["status"] == "completed"
    assert final["store"] is True
    stored = store.get("alice", final["id"])
    assert stored is not None
    assert stored.response == final


async def test_a_failed_stream_is_stored_as_failed(store: SqlResponseStore) -> None:
    events = [
        rpb.ChatResponse(route=rpb.RouteDecision(pool="small", model="tiny")),
        rpb.ChatResponse(chunk=ipb.GenerateChunk(text="Hel")),
        rpb.ChatResponse(error=ipb.GenerateError(code=14, message="replica died")),
    ]
    final = await create(ServingResponses(_Scripted(events)), store, stream=True)
    stored = store.get("alice", final["id"])
    assert stored is not None
    assert stored.response["status"] == "failed"
    assert stored.response["output"][0]["content"][0]["text"] == "Hel"


async def test_store_false_keeps_nothing(store: SqlResponseStore) -> None:
    serving = ServingResponses(RecordingRouter())
    response = await create(serving, store, store=False)
    assert response["store"] is False
    assert store.get("alice", response["id"]) is None
    with pytest.raises(APIError) as caught:
        await create(serving, store, previous_response_id=response["id"])
    assert (caught.value.status, caught.value.param, caught.value.code) == (
        404,
        "previous_response_id",
        "previous_response_not_found",
    )


async def test_another_tenants_response_reads_as_unknown(store: SqlResponseStore) -> None:
    serving = ServingResponses(RecordingRouter())
    mine = await create(serving, store, principal=ALICE)
    assert store.get("bob", mine["id"]) is None
    assert store.delete("bob", mine["id"]) is False
    assert store.get("alice", mine["id"]) is not None  # Bob's delete did nothing
    with pytest.raises(APIError) as caught:
        await create(serving, store, principal=BOB, previous_response_id=mine["id"])
    assert caught.value.status == 404
    assert "No response found" in caught.value.message


async def test_a_deleted_link_makes_the_conversation_refused_not_shortened(
    store: SqlResponseStore,
) -> None:
    serving = ServingResponses(RecordingRouter())
    first = await create(serving, store)
    second = await create(serving, store, previous_response_id=first["id"])
    assert store.delete("alice", first["id"]) is True
    assert store.get("alice", second["id"]) is not None  # still readable
    with pytest.raises(APIError) as caught:
        await create(serving, store, previous_response_id=second["id"])
    assert caught.value.status == 400
    assert first["id"] in caught.value.message
    assert "deleted" in caught.value.message


async def test_a_conversation_over_the_item_limit_is_refused(store: SqlResponseStore) -> None:
    serving = ServingResponses(RecordingRouter())
    previous = None
    for _ in range(3):  # each response: one input item and one output item
        fields = {"previous_response_id": previous} if previous else {}
        previous = (await create(serving, store, **fields))["id"]
    # 6 items of history + 1 new one against a limit of 6 items.
    with pytest.raises(APIError) as caught:
        await create(serving, store, max_items=6, previous_response_id=previous)
    assert (caught.value.status, caught.value.code) == (400, "conversation_too_long")
    assert "7 input items" in caught.value.message
    # Longer than the links replayed at all: refused by length too, never cut short.
    with pytest.raises(APIError) as caught:
        await create(serving, store, max_items=1, previous_response_id=previous)
    assert (caught.value.status, caught.value.code) == (400, "conversation_too_long")
    assert (await create(serving, store, max_items=7, previous_response_id=previous))["id"]


async def test_storage_turned_off_refuses_what_needs_it() -> None:
    serving = ServingResponses(RecordingRouter())
    assert (await create(serving, None))["store"] is False
    for fields, param in (
        ({"store": True}, "store"),
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ):
        with pytest.raises(APIError) as caught:
            await create(serving, None, **fields)
        assert (caught.value.status, caught.value.param) == (400, param)
        assert "does not store responses" in caught.value.message


async def test_a_database_failure_returns_the_answer_marked_not_stored(
    store: SqlResponseStore,
) -> None:
    class Broken(SqlResponseStore):
        def save(self, stored: StoredResponse, *, key_id: str = "") -> None:
            raise OSError("disk full")

    broken = Broken(store._sessions)
    response = await create(ServingResponses(RecordingRouter("Hi!")), broken)
    assert response["store"] is False
    assert response["output"][0]["content"][0]["text"] == "Hi!"


async def test_a_stored_conversation_that_does_not_read_back_is_a_clear_500(
    store: SqlResponseStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Only what the gateway wrote is replayed; a row it cannot read (edited by hand, or
    written by a future version) is the operator's problem, said as such, not a traceback."""
    response = {"id": "resp_bad", "created_at": 1, "status": "completed", "output": []}
    store.save(StoredResponse("resp_bad", "alice", None, [{"type": "mystery"}], response))
    with pytest.raises(APIError) as caught:
        await create(ServingResponses(RecordingRouter()), store, previous_response_id="resp_bad")
    assert (caught.value.status, caught.value.code) == (500, "internal_error")
    assert "stored conversation could not be read" in caught.value.message
    assert "does not read back as input items" in caplog.text


def test_input_items_are_stored_in_openais_shapes_and_read_back_as_input() -> None:
    request = body(
        input=[
            {"role": "user", "content": "2+3?"},
            {"type": "function_call", "call_id": "c1", "name": "add", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "5"},
            {"role": "assistant", "content": "5."},
        ]
    )
    items = input_items_of(request)
    assert [item["type"] for item in items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert all(item["id"] for item in items)
    assert items[0]["content"] == [{"type": "input_text", "text": "2+3?"}]
    assert items[3]["content"] == [{"type": "output_text", "text": "5."}]
    # Replayed, they are the same conversation as the original input.
    replayed = router_request(body(input="next"), "r", history=items)
    assert conversation(replayed)[:-1] == conversation(router_request(request, "r"))
    assert input_items_of(body(input="hi"))[0]["content"] == [{"type": "input_text", "text": "hi"}]


def test_input_item_pages() -> None:
    items = [{"id": f"i{n}", "type": "message"} for n in range(5)]
    page = items_page(items, limit=2, order="desc", after=None)
    assert [i["id"] for i in page["data"]] == ["i4", "i3"]
    assert (page["object"], page["first_id"], page["last_id"], page["has_more"]) == (
        "list",
        "i4",
        "i3",
        True,
    )
    page = items_page(items, limit=2, order="asc", after="i2")
    assert [i["id"] for i in page["data"]] == ["i3", "i4"]
    assert page["has_more"] is False
    assert items_page([], limit=20, order="desc", after=None)["first_id"] is None
    with pytest.raises(APIError) as caught:
        items_page(items, limit=2, order="asc", after="nope")
    assert (caught.value.status, caught.value.param) == (400, "after")


async def test_purge_deletes_only_older_responses(store: SqlResponseStore) -> None:
    kept = await create(ServingResponses(RecordingRouter()), store)
    assert store.purge(datetime.now(UTC) - timedelta(days=1)) == 0
    assert store.purge(datetime.now(UTC) + timedelta(seconds=2)) == 1
    assert store.get("alice", kept["id"]) is None


class _Scripted:
    def __init__(self, events: list[rpb.ChatResponse]) -> None:
        self.events = events

    async def chat(self, request: rpb.ChatRequest) -> Any:
        for event in self.events:
            yield event
