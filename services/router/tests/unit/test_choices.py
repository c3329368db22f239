"""Requests for several choices (OpenAI's ``n``): routed once, one generation per choice on
the routed model, events merged and tagged; failures fail the whole response and stop the
other choices."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo.router.v1 import router_pb2_grpc
from lalo_common.errors import InvalidArgument, LaloError
from lalo_router.complex_path import WORKFLOW_POOL
from lalo_router.forwarding import ChatForwarder, Route
from lalo_router.policy import PolicyRouter, PolicySpec
from lalo_router.replicas import ReplicaSet
from lalo_testing.inference import FakeServer, start_fake_inference, wait_until

TOKEN = "router-choices-token"


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeServer, FakeServer, ReplicaSet, ChatForwarder]]:
    a = await start_fake_inference("a", ["tiny"], service_token=TOKEN)
    b = await start_fake_inference("b", ["tiny"], service_token=TOKEN)
    replicas = ReplicaSet([("small", a.target), ("small", b.target)], service_token=TOKEN)
    await replicas.refresh()
    forwarder = ChatForwarder(
        replicas, PolicyRouter(PolicySpec(default_pool="small"), replicas, None).route
    )
    yield a, b, replicas, forwarder
    await replicas.close()
    await a.stop()
    await b.stop()


def request(n: int, model: str = "tiny", **sampling: Any) -> rpb.ChatRequest:
    return rpb.ChatRequest(
        request_id="r-n",
        model=model,
        n=n,
        chat=ipb.ChatInput(messages=[ipb.ChatMessage(role="user", content="hi")]),
        sampling=ipb.SamplingParams(**sampling),
    )


async def events_of(stream: AsyncIterator[rpb.ChatResponse]) -> list[rpb.ChatResponse]:
    return [event async for event in stream]


def texts(events: list[rpb.ChatResponse]) -> dict[int, str]:
    out: dict[int, str] = {}
    for event in events:
        if event.WhichOneof("event") == "chunk":
            out[event.choice] = out.get(event.choice, "") + event.chunk.text
    return out


async def test_each_choice_is_its_own_generation_and_the_route_goes_out_once(fakes: Any) -> None:
    a, b, _replicas, forwarder = fakes
    events = await events_of(forwarder.chat(request(3, "auto")))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "route"
    assert kinds.count("route") == 1
    assert events[0].route.model == "tiny"
    completes = [e for e in events if e.WhichOneof("event") == "complete"]
    assert sorted(e.choice for e in completes) == [0, 1, 2]
    # Each choice's text is one replica's whole answer, in order.
    assert sorted(texts(events).values()) == sorted(
        f"{c.servicer.name}-0 {c.servicer.name}-1 {c.servicer.name}-2 "
        for c in (a, b)
        for _call in c.servicer.calls
    )
    # Least outstanding requests: the choices spread over both replicas.
    assert a.servicer.calls
    assert b.servicer.calls
    assert len(a.servicer.calls) + len(b.servicer.calls) == 3
    # A choice's events keep their order: its complete comes after its chunks.
    for choice in range(3):
        own = [e.WhichOneof("event") for e in events if e.choice == choice and e.HasField("chunk")]
        assert own == ["chunk"] * 3
        last = max(i for i, e in enumerate(events) if e.choice == choice)
        assert events[last].WhichOneof("event") == "complete"


async def test_a_seed_gives_each_choice_its_own_repeatable_seed(fakes: Any) -> None:
    a, b, _replicas, forwarder = fakes
    await events_of(forwarder.chat(request(3, seed=41)))
    seeds = sorted(call.request.sampling.seed for c in (a, b) for call in c.servicer.calls)
    assert seeds == [41, 42, 43]
    # It wraps within int64 instead of overflowing.
    for c in (a, b):
        c.servicer.calls.clear()
    await events_of(forwarder.chat(request(2, seed=2**63 - 1)))
    seeds = sorted(call.request.sampling.seed for c in (a, b) for call in c.servicer.calls)
    assert seeds == [-(2**63), 2**63 - 1]
    # Without a seed none is invented.
    for c in (a, b):
        c.servicer.calls.clear()
    await events_of(forwarder.chat(request(2)))
    assert not any(
        call.request.sampling.HasField("seed") for c in (a, b) for call in c.servicer.calls
    )


async def test_a_failure_before_any_output_fails_the_request_with_its_field(fakes: Any) -> None:
    a, b, replicas, forwarder = fakes
    for fake in (a, b):
        fake.servicer.behaviour = "fail_before"
        fake.servicer.fail_code = grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidArgument, match="failed before output"):
        await events_of(forwarder.chat(request(4)))
    await wait_until(lambda: all(r.outstanding == 0 for r in replicas.replicas))


async def test_a_failure_after_output_ends_the_response_in_band_and_stops_the_others(
    fakes: Any,
) -> None:
    a, b, replicas, forwarder = fakes
    a.servicer.behaviour = "fail_after"
    b.servicer.behaviour = "hang"
    events = await asyncio.wait_for(events_of(forwarder.chat(request(2))), timeout=20)
    assert events[-1].WhichOneof("event") == "error"
    assert events[-1].choice == 0  # the first choice went to a, the least busy first
    assert "died mid-stream" in events[-1].error.message
    assert not any(e.WhichOneof("event") == "complete" for e in events)
    (hung,) = b.servicer.calls
    await asyncio.wait_for(hung.cancelled.wait(), timeout=10)
    await wait_until(lambda: all(r.outstanding == 0 for r in replicas.replicas))


async def test_an_unexpected_failure_in_one_choice_fails_the_response(
    fakes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in one choice's forwarding must not drop that choice silently: the caller
    gets an error (before any output: a plain INTERNAL one) and nothing is left running."""
    _a, _b, replicas, forwarder = fakes
    forward = forwarder._forward
    calls = {"count": 0}

    def broken_second(*args: Any, **kwargs: Any) -> Any:
        calls["count"] += 1
        if calls["count"] == 2:
            raise RuntimeError("bug")
        return forward(*args, **kwargs)

    monkeypatch.setattr(forwarder, "_forward", broken_second)
    with pytest.raises(LaloError, match="choice 1 failed: internal error") as info:
        await events_of(forwarder.chat(request(2)))
    assert info.value.code is grpc.StatusCode.INTERNAL
    await wait_until(lambda: all(r.outstanding == 0 for r in replicas.replicas))


async def test_closing_the_stream_stops_every_choice(fakes: Any) -> None:
    a, b, replicas, forwarder = fakes
    a.servicer.behaviour = b.servicer.behaviour = "hang"
    stream = forwarder.chat(request(2))
    assert (await stream.__anext__()).WhichOneof("event") == "route"
    await stream.__anext__()
    # The route goes out once the first choice answers; the second choice's call may still
    # be on its way to its replica (seen once on a busy machine): close once both are in.
    await wait_until(lambda: len([*a.servicer.calls, *b.servicer.calls]) == 2)
    await stream.aclose()
    calls = [*a.servicer.calls, *b.servicer.calls]
    assert len(calls) == 2
    for call in calls:
        await asyncio.wait_for(call.cancelled.wait(), timeout=10)
    await wait_until(lambda: all(r.outstanding == 0 for r in replicas.replicas))


async def test_more_choices_than_openai_allows_are_refused(fakes: Any) -> None:
    a, b, _replicas, forwarder = fakes
    with pytest.raises(InvalidArgument, match="at most 128") as info:
        await events_of(forwarder.chat(request(129)))
    assert info.value.param == "n"
    assert not a.servicer.calls
    assert not b.servicer.calls


def test_a_workflow_the_policy_chose_gives_way_to_its_direct_model() -> None:
    direct = Route(pool="small", model="tiny", reason="default pool")
    chosen = Route(pool=WORKFLOW_POOL, model="workflow", reason="agentic", direct=direct)
    routed = ChatForwarder._direct(chosen, request(2))
    assert (routed.pool, routed.model) == ("small", "tiny")
    assert "n > 1" in routed.reason
    plain = Route(pool="small", model="tiny", reason="explicit model")
    assert ChatForwarder._direct(plain, request(2)) is plain


def test_a_workflow_the_caller_named_cannot_give_several_choices() -> None:
    named = Route(pool=WORKFLOW_POOL, model="workflow", reason="explicit model")
    with pytest.raises(InvalidArgument, match="n > 1 is not supported for workflows") as info:
        ChatForwarder._direct(named, request(2))
    assert info.value.param == "n"


async def test_through_a_router_server_events_carry_their_choice(
    fakes: Any, start_router: Callable[..., Awaitable[router_pb2_grpc.RouterServiceStub]]
) -> None:
    _a, _b, replicas, _forwarder = fakes
    router = await start_router(replicas, TOKEN)
    events = [e async for e in router.Chat(request(2), timeout=10)]
    assert sorted(e.choice for e in events if e.WhichOneof("event") == "complete") == [0, 1]
    assert len(texts(events)) == 2


def prompt_list(*prompts: str, n: int = 1, model: str = "tiny", **sampling: Any) -> rpb.ChatRequest:
    return rpb.ChatRequest(
        request_id="r-list",
        model=model,
        n=n,
        prompts=rpb.PromptList(prompts=prompts),
        sampling=ipb.SamplingParams(**sampling),
    )


def calls_of(*fakes: FakeServer) -> list[Any]:
    return [call for fake in fakes for call in fake.servicer.calls]


async def test_a_list_of_prompts_gives_n_choices_per_prompt_in_order(fakes: Any) -> None:
    a, b, _replicas, forwarder = fakes
    events = await events_of(forwarder.chat(prompt_list("p0", "p1", "p2", n=2, seed=7)))
    assert [e.WhichOneof("event") for e in events].count("route") == 1
    completes = sorted(e.choice for e in events if e.WhichOneof("event") == "complete")
    assert completes == [0, 1, 2, 3, 4, 5]
    # Each replica call is one prompt (as a plain prompt), n calls per prompt, and choice
    # j of every prompt samples with seed + j: each prompt answered as it would be alone.
    seen = sorted((c.request.prompt, c.request.sampling.seed) for c in calls_of(a, b))
    assert seen == [("p0", 7), ("p0", 8), ("p1", 7), ("p1", 8), ("p2", 7), ("p2", 8)]
    assert all(c.request.WhichOneof("input") == "prompt" for c in calls_of(a, b))


async def test_choice_p_times_n_plus_j_answers_prompt_p(fakes: Any) -> None:
    a, b, _replicas, forwarder = fakes
    a.servicer.behaviour = b.servicer.behaviour = "echo"  # each answer is its prompt
    events = await events_of(forwarder.chat(prompt_list("first", "second", "third", n=2)))
    assert texts(events) == {
        0: "first",
        1: "first",
        2: "second",
        3: "second",
        4: "third",
        5: "third",
    }


async def test_a_list_of_one_prompt_is_that_prompt(fakes: Any) -> None:
    a, b, _replicas, forwarder = fakes
    events = await events_of(forwarder.chat(prompt_list("only")))
    assert sorted(e.choice for e in events if e.WhichOneof("event") == "complete") == [0]
    (call,) = calls_of(a, b)
    assert (call.request.WhichOneof("input"), call.request.prompt) == ("prompt", "only")


async def test_an_empty_or_oversized_list_of_prompts_is_refused(fakes: Any) -> None:
    a, b, _replicas, forwarder = fakes
    with pytest.raises(InvalidArgument, match="empty list") as info:
        await events_of(forwarder.chat(prompt_list()))
    assert info.value.param == "prompt"
    with pytest.raises(InvalidArgument, match="65 prompts with n=2 ask for 130") as info:
        await events_of(forwarder.chat(prompt_list(*["x"] * 65, n=2)))
    assert info.value.param == "prompt"
    assert not calls_of(a, b)


def test_a_workflow_the_caller_named_cannot_take_a_list_of_prompts() -> None:
    named = Route(pool=WORKFLOW_POOL, model="workflow", reason="explicit workflow")
    with pytest.raises(InvalidArgument, match="not raw prompts") as info:
        ChatForwarder._direct(named, prompt_list("a", "b"))
    assert info.value.param == "model"


async def test_a_prompt_of_a_list_that_is_refused_is_named(
    fakes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, replicas, forwarder = fakes
    forward = forwarder._forward
    late = {"refusal": False}

    async def refused_after_the_others_began() -> AsyncIterator[rpb.ChatResponse]:
        await wait_until(lambda: any(c.finished for c in calls_of(a, b)))
        raise InvalidArgument("This model's maximum context length is 1024 tokens")
        yield rpb.ChatResponse()  # an async generator, like _forward

    def refuse_the_long_one(request: rpb.ChatRequest, *args: Any, **kwargs: Any) -> Any:
        if request.prompt == "long" and late["refusal"]:
            return refused_after_the_others_began()
        if request.prompt == "long":
            raise InvalidArgument("This model's maximum context length is 1024 tokens")
        return forward(request, *args, **kwargs)

    monkeypatch.setattr(forwarder, "_forward", refuse_the_long_one)
    # Before any output: the call fails, naming the prompt.
    a.servicer.behaviour = b.servicer.behaviour = "hang"
    with pytest.raises(InvalidArgument, match=r"^prompt\[1\]: This model's maximum") as info:
        await events_of(forwarder.chat(prompt_list("short", "long")))
    assert info.value.param == "prompt[1]"
    await wait_until(lambda: all(r.outstanding == 0 for r in replicas.replicas))
    # After output: the in-band error carries the message and the field.
    a.servicer.behaviour = b.servicer.behaviour = "ok"
    late["refusal"] = True
    stream = forwarder.chat(prompt_list("short", "short", "long"))
    events = await asyncio.wait_for(events_of(stream), timeout=20)
    error = events[-1]
    assert error.WhichOneof("event") == "error"
    assert (error.choice, error.error.param) == (2, "prompt[2]")
    assert error.error.message.startswith("prompt[2]: ")


# ---- token-id prompts (a named model's own ids) ----


def token_prompts(*prompts: list[int], n: int = 1, model: str = "tiny") -> rpb.ChatRequest:
    return rpb.ChatRequest(
        request_id="r-ids",
        model=model,
        n=n,
        prompts=rpb.PromptList(token_prompts=[ipb.TokenIds(ids=ids) for ids in prompts]),
    )


async def test_a_token_id_prompt_reaches_the_replica_as_ids(fakes: Any) -> None:
    a, b, _replicas, forwarder = fakes
    one = rpb.ChatRequest(model="tiny", prompt_token_ids=ipb.TokenIds(ids=[5, 6, 7]))
    events = await events_of(forwarder.chat(one))
    assert events[0].WhichOneof("event") == "route"
    (call,) = calls_of(a, b)
    assert call.request.WhichOneof("input") == "prompt_token_ids"
    assert list(call.request.prompt_token_ids.ids) == [5, 6, 7]


async def test_a_list_of_token_id_prompts_gives_n_choices_per_prompt(fakes: Any) -> None:
    a, b, _replicas, forwarder = fakes
    events = await events_of(forwarder.chat(token_prompts([1, 2], [3], n=2)))
    completes = sorted(e.choice for e in events if e.WhichOneof("event") == "complete")
    assert completes == [0, 1, 2, 3]
    seen = sorted(tuple(c.request.prompt_token_ids.ids) for c in calls_of(a, b))
    assert seen == [(1, 2), (1, 2), (3,), (3,)]
    # A list of one is that prompt.
    for fake in (a, b):
        fake.servicer.calls.clear()
    await events_of(forwarder.chat(token_prompts([9, 9])))
    (call,) = calls_of(a, b)
    assert list(call.request.prompt_token_ids.ids) == [9, 9]


async def test_token_ids_are_refused_for_auto_and_beside_texts(fakes: Any) -> None:
    a, b, _replicas, forwarder = fakes
    with pytest.raises(InvalidArgument, match="token-id prompts need a named model") as info:
        await events_of(forwarder.chat(token_prompts([1, 2], model="auto")))
    assert info.value.param == "prompt"
    auto_one = rpb.ChatRequest(model="auto", prompt_token_ids=ipb.TokenIds(ids=[1]))
    with pytest.raises(InvalidArgument, match="need a named model"):
        await events_of(forwarder.chat(auto_one))
    mixed = token_prompts([1, 2])
    mixed.prompts.prompts.append("text")
    with pytest.raises(InvalidArgument, match="texts or token-id lists, not both") as info:
        await events_of(forwarder.chat(mixed))
    assert info.value.param == "prompt"
    assert not calls_of(a, b)
