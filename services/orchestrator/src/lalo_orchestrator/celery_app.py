"""The Celery app and its one thin task.

``advance(workflow_id, dispatch)`` takes ids and hands them to the engine; Celery owns
delivery (late acknowledgement, re-delivery when a worker dies), the engine owns
everything else. ``dispatch`` names the workflow's current chain of tasks, so a
re-delivered duplicate of an old message is recognised and dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery

from lalo_orchestrator.settings import OrchestratorSettings

ADVANCE_TASK = "lalo.orchestrator.advance"


def queue_name(settings: OrchestratorSettings) -> str:
    return f"{settings.key_prefix}.workflows"


def create_celery(settings: OrchestratorSettings) -> Celery:
    broker = settings.resolved_broker_url()
    app = Celery("lalo_orchestrator", broker=broker, set_as_current=False)
    transport_options: dict[str, Any] = {}
    if broker.startswith(("redis://", "rediss://", "unix://")):
        transport_options = {
            "visibility_timeout": settings.visibility_timeout_s,
            # Keeps this deployment's queues and unacked bookkeeping apart from any
            # other Celery app on the same Redis.
            "global_keyprefix": f"{settings.key_prefix}:",
        }
    elif broker.startswith("sqla+"):
        # kombu reads polling_interval from the class; setting it through
        # broker_transport_options crashes this transport (see NOTES).
        from kombu.transport import sqlalchemy as sqla_transport

        sqla_transport.Transport.polling_interval = settings.sqlite_broker_poll_s
    app.conf.update(
        task_default_queue=queue_name(settings),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_enable_remote_control=False,
    )
    return app


def register_tasks(app: Celery, advance: Callable[[str, str], object]) -> None:
    """Register the task; ``advance`` is the engine entry point of this process."""

    @app.task(  # type: ignore[untyped-decorator]
        name=ADVANCE_TASK,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
    )
    def advance_workflow(workflow_id: str, dispatch: str) -> None:
        advance(workflow_id, dispatch)


class Enqueuer:
    """Sends ``advance`` tasks by name (producers need not import the task)."""

    def __init__(self, app: Celery, settings: OrchestratorSettings) -> None:
        self._app = app
        self._queue = queue_name(settings)

    def __call__(self, workflow_id: str, dispatch: str, countdown_s: float = 0.0) -> None:
        self._app.send_task(
            ADVANCE_TASK,
            args=[workflow_id, dispatch],
            queue=self._queue,
            countdown=countdown_s if countdown_s > 0 else None,
        )
