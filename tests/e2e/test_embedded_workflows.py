"""The complex path in embedded mode, as `make up` runs it: gateway, router,
inference-small, tools, orchestrator API and a Celery worker as real processes on SQLite
(kombu's server-less broker), driven with the official openai SDK."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from lalo_testing.stack import Stack, start_stack
from lalo_testing.vocab import Vocab


@pytest.fixture(scope="module")
def workflow_stack(
    tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    stack = start_stack(
        tiny_model_path,
        api_key=f"sk-e2e-{secrets.token_hex(8)}",
        threads=1,
        n_ctx=2048,
        workflows=True,
        log_dir=tmp_path_factory.mktemp("workflow-stack-logs"),
    )
    try:
        yield stack
    finally:
        stack.stop()


def test_workflow_route_is_listed(workflow_stack: Stack) -> None:
    client = openai.OpenAI(base_url=workflow_stack.base_url, api_key=workflow_stack.api_key)
    assert "workflow" in [m.id for m in client.models.list()]


def test_chat_through_a_workflow_ends_in_an_answer_or_a_clear_reason(
    workflow_stack: Stack,
) -> None:
    # The tiny model has random weights: its plan may or may not work. Either way the
    # request must end with the workflow's outcome, visible through /v1/workflows too.
    client = openai.OpenAI(
        base_url=workflow_stack.base_url, api_key=workflow_stack.api_key, max_retries=0
    )
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="workflow", messages=[{"role": "user", "content": "what is 6*7?"}]
        )
        workflow_id = raw.headers["x-lalo-workflow-id"]
        assert raw.headers["x-lalo-route"] == "workflow"
        assert raw.parse().choices[0].finish_reason == "stop"
        expected = {"succeeded"}
    except openai.UnprocessableEntityError as exc:
        body = exc.response.json()["error"]
        assert body["code"] == "workflow_failed"
        assert "ended" in body["message"]
        workflow_id = body["message"].split()[1]
        expected = {"failed", "budget_exceeded"}
    got = httpx.get(
        f"{workflow_stack.base_url}/workflows/{workflow_id}",
        headers={"authorization": f"Bearer {workflow_stack.api_key}"},
        timeout=30,
    )
    assert got.status_code == 200
    assert got.json()["state"] in expected
    assert got.json()["steps"], "a workflow that ran has steps"


AGENTIC = "Book me a flight to Paris next friday and add it to my calendar"
# Between a lookup and a question: the classifier's best label is agentic, at ~0.43.
UNSURE_AGENTIC = "What's up with the printer on the third floor?"


def test_auto_sends_an_agentic_request_to_a_workflow_without_a_policy_file(
    workflow_stack: Stack, tiny_model_path: Path
) -> None:
    """make up's stack has no policy file: the router derives one, and with an orchestrator
    configured that sends agentic requests to the complex path. The policy chose the
    workflow, not the caller, so one that does not answer (the random-weight model's plans
    usually fail) is followed by a direct answer that names the workflow tried."""
    client = openai.OpenAI(
        base_url=workflow_stack.base_url, api_key=workflow_stack.api_key, max_retries=0
    )
    # The random model may end at once (EOS is an ordinary logit): barred, the direct
    # answer always has content.
    no_eos = Vocab.from_gguf(tiny_model_path).no_eos()
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": AGENTIC}],
        max_tokens=8,
        logit_bias=no_eos,
    )
    reply = raw.parse()
    workflow_id = raw.headers["x-lalo-workflow-id"]
    assert raw.headers["x-lalo-category"] == "agentic"
    assert raw.headers["x-lalo-route"] in ("workflow", "small")
    assert reply.choices[0].message.content
    got = httpx.get(
        f"{workflow_stack.base_url}/workflows/{workflow_id}",
        headers={"authorization": f"Bearer {workflow_stack.api_key}"},
        timeout=30,
    ).json()
    if raw.headers["x-lalo-route"] == "workflow":
        assert got["state"] == "succeeded"
    else:
        assert got["state"] in ("failed", "budget_exceeded")
        assert reply.model == workflow_stack.model_id

    # Streamed, the failure travels beside the answer as reasoning, then the answer.
    stream = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": AGENTIC}],
        max_tokens=8,
        logit_bias=no_eos,
        stream=True,
    )
    chunks = list(stream)
    reasoning = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "planned" in reasoning
    assert content
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_an_unsure_agentic_label_gets_a_direct_answer_not_a_workflow(
    workflow_stack: Stack,
) -> None:
    """The derived policy asks 0.5 confidence of `agentic` before it starts a workflow: this
    request reads a little like a command to the classifier (agentic at ~0.43, factual_qa
    ~0.28), and is answered by the small model directly."""
    client = openai.OpenAI(
        base_url=workflow_stack.base_url, api_key=workflow_stack.api_key, max_retries=0
    )
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": UNSURE_AGENTIC}],
        max_tokens=8,
    )
    assert raw.headers["x-lalo-category"] == "agentic"
    assert raw.headers["x-lalo-route"] == "small"
    assert "x-lalo-workflow-id" not in raw.headers
    assert raw.parse().choices[0].message.content


def test_a_request_wanting_structure_is_answered_by_a_model_not_a_workflow(
    workflow_stack: Stack,
) -> None:
    """A workflow answers in plain text: an agentic request with a response format (or
    tools, or logprobs) goes to a model that can honour it."""
    client = openai.OpenAI(
        base_url=workflow_stack.base_url, api_key=workflow_stack.api_key, max_retries=0
    )
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": AGENTIC}],
        response_format={"type": "json_object"},
        max_tokens=8,
    )
    assert raw.headers["x-lalo-route"] == "small"
    assert raw.headers["x-lalo-category"] == "agentic"
    assert "x-lalo-workflow-id" not in raw.headers
    # Named outright, the workflow model refuses what it would ignore, before it starts.
    tools = [
        {
            "type": "function",
            "function": {
                "name": "book_flight",
                "parameters": {"type": "object", "properties": {"to": {"type": "string"}}},
            },
        }
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="workflow",
            messages=[{"role": "user", "content": AGENTIC}],
            tools=tools,  # type: ignore[arg-type]
        )
    assert caught.value.response.json()["error"]["param"] == "tools"
