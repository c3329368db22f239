"""``lalo-orchestrator migrate | worker | api``."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import uuid
from typing import Any

from lalo_common import aio
from lalo_common.logging import configure_logging

from lalo_orchestrator.settings import OrchestratorSettings, get_settings

log = logging.getLogger("lalo_orchestrator")


def migrate(settings: OrchestratorSettings) -> None:
    from lalo_orchestrator.migrations import upgrade

    upgrade(settings.database_url)
    log.info("database is at the newest revision")


def worker(settings: OrchestratorSettings, extra: list[str]) -> None:
    from celery import signals

    from lalo_orchestrator.celery_app import create_celery, queue_name, register_tasks
    from lalo_orchestrator.runtime import Sweeper, WorkerRuntime

    app = create_celery(settings)
    runtime = WorkerRuntime(settings, app)
    register_tasks(app, runtime.advance)
    sweeper = Sweeper(settings, app)

    def on_ready(**_kwargs: Any) -> None:
        sweeper.start()

    def on_shutdown(**_kwargs: Any) -> None:
        sweeper.stop()

    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_shutdown.connect(on_shutdown, weak=False)
    argv = [
        "worker",
        f"--pool={settings.worker_pool}",
        f"--concurrency={settings.worker_concurrency}",
        f"--queues={queue_name(settings)}",
        f"--loglevel={settings.log_level}",
        f"--hostname=orchestrator-{os.getpid()}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        *extra,
    ]
    app.worker_main(argv)


async def serve(settings: OrchestratorSettings) -> None:
    from lalo_orchestrator.service import build_server

    server, _api = build_server(settings)
    port = await server.start(f"{settings.host}:{settings.port}")
    await server.set_serving(True)
    log.info("WorkflowService listening on %s:%d", settings.host, port)
    await server.serve_until_signalled()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lalo-orchestrator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create or upgrade the orchestrator's tables")
    sub.add_parser("worker", help="run a Celery worker (extra arguments go to Celery)")
    sub.add_parser("api", help="serve lalo.workflow.v1.WorkflowService over gRPC")
    args, extra = parser.parse_known_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json, service="orchestrator")
    if args.command == "migrate":
        migrate(settings)
    elif args.command == "worker":
        worker(settings, extra)
    elif args.command == "api":
        aio.run(serve(settings))
    else:  # pragma: no cover - argparse refuses unknown commands
        sys.exit(2)


if __name__ == "__main__":
    main()
