"""Per-process wiring of store, clients, engine and enqueuer, built lazily after fork."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from celery import Celery

from lalo_orchestrator.celery_app import Enqueuer
from lalo_orchestrator.clients import GrpcModelClient, GrpcToolClient
from lalo_orchestrator.db import create_db_engine
from lalo_orchestrator.engine import Outcome, WorkflowEngine
from lalo_orchestrator.events import RedisEventPublisher
from lalo_orchestrator.settings import OrchestratorSettings
from lalo_orchestrator.store import WorkflowStore

log = logging.getLogger(__name__)


def build_store(settings: OrchestratorSettings, *, pool_size: int = 5) -> WorkflowStore:
    publisher = (
        RedisEventPublisher(settings.redis_url, settings.key_prefix) if settings.redis_url else None
    )
    engine = create_db_engine(settings.database_url, pool_size=pool_size)
    if publisher is None:
        return WorkflowStore(engine)
    return WorkflowStore(engine, publisher=publisher)


@dataclass
class Runtime:
    store: WorkflowStore
    engine: WorkflowEngine
    pid: int


class WorkerRuntime:
    """Builds the engine in whichever process runs tasks (prefork children included)."""

    def __init__(self, settings: OrchestratorSettings, app: Celery) -> None:
        self.settings = settings
        self.app = app
        self._lock = threading.Lock()
        self._runtime: Runtime | None = None

    def get(self) -> Runtime:
        with self._lock:
            if self._runtime is None or self._runtime.pid != os.getpid():
                if self._runtime is not None:
                    # Inherited across fork: drop the parent's connections unused.
                    self._runtime.store.engine.dispose(close=False)
                token = self.settings.service_token.get_secret_value()
                store = build_store(self.settings)
                engine = WorkflowEngine(
                    store,
                    GrpcModelClient(self.settings.inference_target, token),
                    GrpcToolClient(self.settings.tools_target, token),
                    self.settings,
                    Enqueuer(self.app, self.settings),
                )
                self._runtime = Runtime(store=store, engine=engine, pid=os.getpid())
            return self._runtime

    def advance(self, workflow_id: str, dispatch: str) -> Outcome:
        outcome = self.get().engine.advance(workflow_id, dispatch)
        log.debug("workflow %s: %s", workflow_id, outcome)
        return outcome


class Sweeper:
    """Re-enqueues workflows that stalled (their worker died, or a task was lost).

    Runs as a thread in every worker; ``stalled()`` stamps what it returns, so several
    sweepers do not enqueue the same workflow at once.
    """

    def __init__(self, settings: OrchestratorSettings, app: Celery) -> None:
        self.settings = settings
        self._enqueue = Enqueuer(app, settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workflow-sweeper", daemon=True)
        self._store: WorkflowStore | None = None

    def start(self) -> None:
        self._store = WorkflowStore(create_db_engine(self.settings.database_url, pool_size=1))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def sweep_once(self) -> list[str]:
        assert self._store is not None
        stalled = self._store.stalled(self.settings.stall_after_s)
        for workflow_id, dispatch in stalled:
            log.info("workflow %s stalled; enqueueing it again", workflow_id)
            self._enqueue(workflow_id, dispatch, 0.0)
        return [workflow_id for workflow_id, _ in stalled]

    def _run(self) -> None:
        while not self._stop.wait(self.settings.sweep_interval_s):
            try:
                self.sweep_once()
            except Exception:
                log.warning("sweep failed", exc_info=True)
