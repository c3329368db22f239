"""A gateway started before its database exists waits for it (logging why, with backoff)
and serves once it appears, instead of crash-looping."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.integration


def test_gateway_waits_for_a_late_database(postgres_url: str, tmp_path: Path) -> None:
    name = f"lalo_gw_test_late_{uuid.uuid4().hex[:10]}"
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    admin = (
        make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "gateway.log"
    env = {
        **os.environ,
        "LALO_GATEWAY_DATABASE_URL": url,
        "LALO_GATEWAY_PORT": str(port),
        "LALO_GATEWAY_GRPC_PORT": "0",
        "LALO_GATEWAY_ROUTER_TARGET": "127.0.0.1:9",
        "LALO_GATEWAY_DB_CONNECT_BACKOFF_MAX_S": "0.5",
        "LALO_GATEWAY_AUDIT_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lalo_gateway"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while "unavailable (attempt" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.1)
        assert "retrying in" in log.read_text()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        ready = False
        while not ready and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.1)
        assert ready, log.read_text()
        assert "is reachable (attempt" in log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=15)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
