"""Stored responses: what keeping a response (``store``) and continuing one
(``previous_response_id``) cost through gateway + router + inference-small, beside the same
conversation sent whole in ``input`` with ``store: false``, measured in the same run.

On the tiny test model, so the model's own time is a millisecond or two and the database's
shows. The gateway's database is the stack's SQLite file (embedded mode), or Postgres with
``--postgres URL`` (a throw-away database is created on that server and dropped after).
Requests of the three kinds are interleaved, so a slow phase of the machine hits them alike.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from lalo_testing.stack import start_stack
from lalo_testing.tiny_model import write_model
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / ".lalo" / "models" / "tiny-chat.gguf"
MODEL_ID = "tiny-chat"


def create(client: httpx.Client, **fields: Any) -> tuple[float, dict[str, Any]]:
    body = {"model": MODEL_ID, "max_output_tokens": 1, "temperature": 0, **fields}
    start = time.perf_counter()
    reply = client.post("/v1/responses", json=body)
    elapsed = (time.perf_counter() - start) * 1000.0
    reply.raise_for_status()
    return elapsed, reply.json()


def chain(client: httpx.Client, links: int) -> tuple[str, list[dict[str, str]]]:
    """A stored conversation of ``links`` responses: the last one's id, and the same
    conversation as input items (what a client without storage sends)."""
    previous: str | None = None
    history: list[dict[str, str]] = []
    for turn in range(links):
        text = f"turn {turn}: hello"
        fields = {"previous_response_id": previous} if previous else {}
        _, response = create(client, input=text, **fields)
        history += [
            {"role": "user", "content": text},
            {"role": "assistant", "content": response["output"][0]["content"][0]["text"]},
        ]
        previous = response["id"]
    assert previous is not None
    return previous, history


def measure(client: httpx.Client, links: int, requests: int) -> dict[str, list[float]]:
    last, history = chain(client, links)
    question = {"role": "user", "content": "and now?"}
    kinds: dict[str, dict[str, Any]] = {
        "whole conversation in input, store false": {"input": [*history, question], "store": False},
        "previous_response_id, store false": {
            "input": [question],
            "previous_response_id": last,
            "store": False,
        },
        "previous_response_id, store true": {
            "input": [question],
            "previous_response_id": last,
        },
    }
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for fields in kinds.values():  # warm-up
        create(client, **fields)
    for _ in range(requests):
        for kind, fields in kinds.items():
            times[kind].append(create(client, **fields)[0])
    return times


def fresh_postgres(url: str) -> tuple[str, str, str]:
    """(database URL for the gateway, admin conninfo, database name)."""
    import psycopg

    name = f"lalo_bench_{uuid.uuid4().hex[:10]}"
    admin = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    # The same server and credentials, the new database (query options kept).
    return make_url(admin).set(database=name).render_as_string(hide_password=False), admin, name


def main() -> int:
    parser = argparse.ArgumentParser(description="LALO stored-responses benchmark")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--links", default="1,10,50", help="conversation lengths, in responses")
    parser.add_argument("--postgres", default=os.environ.get("LALO_BENCH_DATABASE_URL", ""))
    args = parser.parse_args()
    if not TINY.exists():
        write_model(TINY, "tiny", seed=0)
    env: dict[str, str] = {}
    dropped: tuple[str, str] | None = None
    database = "SQLite (embedded mode)"
    if args.postgres:
        url, admin, name = fresh_postgres(args.postgres)
        env["LALO_GATEWAY_DATABASE_URL"] = url
        dropped = (admin, name)
        database = "Postgres"
    key = f"sk-bench-{secrets.token_hex(8)}"
    stack = start_stack(
        TINY,
        api_key=key,
        service_token=secrets.token_hex(16),
        model_id=MODEL_ID,
        parallel=1,
        n_ctx=4096,
        extra_env=env,
        log_dir=ROOT / ".lalo" / "bench-logs",
    )
    print(f"model {TINY.name}, gateway database: {database}, {args.requests} requests each")
    try:
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=60) as client:
            columns = f"{'p50 ms':>7} {'p99 ms':>7} {'p50 vs whole':>13}"
            print(f"\n{'links':>5}  {'request':44} {columns}")
            for links in (int(n) for n in args.links.split(",")):
                times = measure(client, links, args.requests)
                reference = float(np.percentile(next(iter(times.values())), 50))
                for kind, values in times.items():
                    p50, p99 = np.percentile(values, [50, 99])
                    print(f"{links:5d}  {kind:44} {p50:7.2f} {p99:7.2f} {p50 - reference:+12.2f}")
    finally:
        stack.stop()
        if dropped is not None:
            import psycopg

            with psycopg.connect(dropped[0], autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dropped[1]}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
