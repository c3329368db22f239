"""The workflow engine: moves one workflow forward by one unit of work per call.

``advance(workflow_id)`` is what a Celery task runs. It takes the workflow's lease (one
worker at a time), does the next unit — plan, or run the next step — records the outcome
in the same transaction as its state change and events, releases the lease and enqueues
the next call. Every unit is safe to repeat: a re-delivered task finds the recorded
result and moves on, so a completed step never runs twice; a step interrupted mid-call
runs again under the same idempotency key.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from lalo_orchestrator.clients import (
    Generation,
    ModelClient,
    StepFailed,
    ToolClient,
    TransientError,
)
from lalo_orchestrator.plan import (
    PlanInvalid,
    last_user_message,
    parse_plan,
    plan_schema,
    planner_messages,
    render,
    render_arguments,
)
from lalo_orchestrator.settings import OrchestratorSettings
from lalo_orchestrator.states import StepKind, StepState, WorkflowState
from lalo_orchestrator.store import (
    LeaseLost,
    StepRecord,
    Tx,
    WorkflowRecord,
    WorkflowStore,
    new_dispatch,
)
from lalo_orchestrator.tables import steps as steps_table

log = logging.getLogger(__name__)

# enqueue(workflow_id, dispatch, countdown_s)
Enqueue = Callable[[str, str, float], None]

MODEL_STEP_SYSTEM = (
    "You carry out one step of a larger task. Answer the request below directly and concisely."
)
RESULT_EVENT_CHARS = 2000


@dataclass(frozen=True)
class Outcome:
    """What one advance call did (for logs and tests)."""

    action: str
    next_in: float | None = None


class _Heartbeat:
    """Renews the lease while a step runs; stops with the block."""

    def __init__(self, store: WorkflowStore, workflow_id: str, worker: str, ttl_s: float) -> None:
        self._store = store
        self._workflow_id = workflow_id
        self._worker = worker
        self._ttl_s = ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._ttl_s / 3):
            try:
                if not self._store.renew(self._workflow_id, self._worker, self._ttl_s):
                    return
            except Exception:
                log.warning("lease renewal failed for %s", self._workflow_id, exc_info=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


class WorkflowEngine:
    def __init__(
        self,
        store: WorkflowStore,
        models: ModelClient,
        tools: ToolClient,
        settings: OrchestratorSettings,
        enqueue: Enqueue,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.models = models
        self.tools = tools
        self.settings = settings
        self.enqueue = enqueue
        self.clock = clock
        # worker token -> next dispatch, for units that released the lease themselves
        self._released: dict[str, str] = {}

    # ----------------------------------------------------------------- entry

    def advance(self, workflow_id: str, dispatch: str) -> Outcome:
        worker = f"{uuid.uuid4().hex[:12]}"
        claim = self.store.claim(workflow_id, worker, self.settings.lease_ttl_s, dispatch)
        if claim.status == "terminal":
            return Outcome("finished")
        if claim.status == "stale":
            return Outcome("stale")  # a duplicate of a message whose chain moved on
        if claim.status in ("busy", "not_yet"):
            # Our chain, but not now: a re-delivery while the lease holder still runs
            # (or died and its lease has not run out), or a retry that is not due yet.
            delay = claim.retry_in + (0.05 if claim.status == "busy" else 0.0)
            self.enqueue(workflow_id, dispatch, delay)
            return Outcome(claim.status, delay)
        next_in: float | None = None
        try:
            with _Heartbeat(self.store, workflow_id, worker, self.settings.lease_ttl_s):
                next_in = self._unit(claim.workflow, worker)
        except LeaseLost:
            log.warning("workflow %s: lease lost mid-step; the new holder carries on", workflow_id)
            return Outcome("lease_lost")
        finally:
            # A unit that ended in a successful step released the lease in its own
            # transaction and chose the next dispatch token there.
            next_dispatch = self._released.pop(worker, None)
            if next_dispatch is None:
                next_dispatch = new_dispatch() if next_in is not None else None
                self.store.release(workflow_id, worker, next_dispatch=next_dispatch)
        if next_in is not None and next_dispatch is not None:
            # A crash before this send leaves the workflow quiet; the sweeper restarts it.
            self.enqueue(workflow_id, next_dispatch, next_in)
            return Outcome("advanced", next_in)
        return Outcome("finished")

    # ----------------------------------------------------------------- units

    def _unit(self, workflow: WorkflowRecord, worker: str) -> float | None:
        """Do one unit of work; return the delay before the next one, None when done."""
        if self.clock() >= workflow.deadline_at:
            return self._finish_budget(
                workflow.id,
                worker,
                f"wall-time budget of {workflow.budgets.max_wall_time_s:g}s exhausted",
            )
        if workflow.state is WorkflowState.PENDING:
            with self.store.mutate(workflow.id, worker) as tx:
                tx.transition(WorkflowState.PLANNING, "planning started")
            workflow = self.store.get(workflow.id)
        if workflow.state is WorkflowState.PLANNING:
            return self._plan(workflow, worker)
        if workflow.state is WorkflowState.RUNNING:
            return self._run_next_step(workflow, worker)
        return None

    def _remaining_s(self, workflow: WorkflowRecord) -> float:
        return max(workflow.deadline_at - self.clock(), 0.0)

    def _finish_budget(self, workflow_id: str, worker: str, reason: str) -> float | None:
        with self.store.mutate(workflow_id, worker) as tx:
            if tx.state.terminal:
                return None
            tx.skip_open_steps(reason)
            tx.transition(WorkflowState.BUDGET_EXCEEDED, reason)
            tx.set(error=reason)
        return None

    def _transient(
        self, workflow: WorkflowRecord, worker: str, error: str, step: StepRecord | None
    ) -> float | None:
        """Schedule a retry with exponential backoff, or give up and fail the unit."""
        attempts = step.attempts if step is not None else self._planning_attempts(workflow)
        if attempts >= self.settings.step_max_attempts:
            message = f"{error} (gave up after {attempts} attempts)"
            if step is not None:
                return self._step_failed(workflow, worker, step, message)
            return self._fail(workflow.id, worker, message)
        backoff = min(
            self.settings.retry_backoff_s * (2 ** max(attempts - 1, 0)),
            self.settings.retry_backoff_max_s,
        )
        with self.store.mutate(workflow.id, worker) as tx:
            if tx.state.terminal:
                return None
            tx.set(not_before=tx.now + backoff)
            tx.event(
                "retry.scheduled",
                {"error": error, "attempt": attempts, "retry_in_s": backoff},
                step=step,
                step_state=step.state if step else None,
            )
            if step is None:
                history = [*workflow.history, {"transient": True, "error": error}]
                tx.set(history=history)
        return float(backoff)

    def _planning_attempts(self, workflow: WorkflowRecord) -> int:
        # Transient planning failures since the last plan, counted in the history.
        count = 0
        for item in reversed(workflow.history):
            if not item.get("transient"):
                break
            count += 1
        return count + 1

    def _fail(self, workflow_id: str, worker: str, reason: str) -> float | None:
        with self.store.mutate(workflow_id, worker) as tx:
            if tx.state.terminal:
                return None
            tx.skip_open_steps(reason)
            tx.transition(WorkflowState.FAILED, reason)
            tx.set(error=reason)
        return None

    # ----------------------------------------------------------------- planning

    def _plan(self, workflow: WorkflowRecord, worker: str) -> float | None:
        budgets = workflow.budgets
        if workflow.tokens_used >= budgets.max_tokens:
            return self._finish_budget(
                workflow.id, worker, f"token budget of {budgets.max_tokens} exhausted"
            )
        settings = self.settings
        max_steps = max(min(settings.plan_max_steps, budgets.max_steps), 1)
        try:
            tools = self.tools.list_tools(
                workflow.allowed_tools, timeout_s=min(settings.call_timeout_s, 10.0)
            )
            generation = self.models.generate(
                model=workflow.model or settings.default_model,
                messages=planner_messages(
                    workflow.messages,
                    tools,
                    [h for h in workflow.history if not h.get("transient")],
                    max_steps=max_steps,
                ),
                max_tokens=min(settings.plan_max_tokens, budgets.max_tokens - workflow.tokens_used),
                temperature=settings.plan_temperature,
                json_schema=plan_schema(
                    tools,
                    max_steps=max_steps,
                    max_chars=settings.plan_max_text_chars,
                    max_arg_chars=settings.plan_max_argument_chars,
                ),
                timeout_s=min(settings.call_timeout_s, self._remaining_s(workflow)),
                request_id=f"{workflow.request_id or workflow.id}:plan{workflow.plan_version + 1}",
            )
        except TransientError as exc:
            if self.clock() >= workflow.deadline_at:
                return self._finish_budget(workflow.id, worker, "wall-time budget exhausted")
            return self._transient(workflow, worker, str(exc), None)
        except StepFailed as exc:
            return self._plan_failed(workflow, worker, str(exc), None)
        try:
            planned = parse_plan(generation.text, tools, max_steps=max_steps)
        except PlanInvalid as exc:
            return self._plan_failed(
                workflow, worker, f"planner gave an invalid plan: {exc}", generation
            )

        with self.store.mutate(workflow.id, worker) as tx:
            if tx.state is not WorkflowState.PLANNING:
                return None  # cancelled while the planner thought
            tokens = workflow.tokens_used + generation.tokens
            version = workflow.plan_version + 1
            created = tx.add_plan(planned, version)
            tx.set(
                tokens_used=tokens, history=[h for h in workflow.history if not h.get("transient")]
            )
            tx.event(
                "plan.created",
                {
                    "plan_version": version,
                    "steps": [s.summary() for s in created],
                    "tokens": generation.tokens,
                },
            )
            tx.transition(WorkflowState.RUNNING, f"plan {version} has {len(created)} steps")
            if tokens > workflow.budgets.max_tokens:
                self._exceed_in(tx, f"token budget of {workflow.budgets.max_tokens} exhausted")
                return None
        return 0.0

    def _plan_failed(
        self, workflow: WorkflowRecord, worker: str, error: str, generation: Generation | None
    ) -> float | None:
        with self.store.mutate(workflow.id, worker) as tx:
            if tx.state.terminal:
                return None
            tokens = workflow.tokens_used + (generation.tokens if generation else 0)
            history = [
                *[h for h in workflow.history if not h.get("transient")],
                {"plan_version": workflow.plan_version + 1, "step": 0, "error": error},
            ]
            tx.set(tokens_used=tokens, history=history)
            tx.event("plan.invalid", {"error": error})
            if tokens > workflow.budgets.max_tokens:
                self._exceed_in(tx, f"token budget of {workflow.budgets.max_tokens} exhausted")
                return None
            if workflow.replans >= workflow.budgets.max_replans:
                reason = f"planning failed after {workflow.replans + 1} attempt(s): {error}"
                tx.transition(WorkflowState.FAILED, reason)
                tx.set(error=reason)
                return None
            tx.set(replans=workflow.replans + 1)
        return 0.0

    def _exceed_in(self, tx: Tx, reason: str) -> None:
        tx.skip_open_steps(reason)
        tx.transition(WorkflowState.BUDGET_EXCEEDED, reason)
        tx.set(error=reason)

    # ----------------------------------------------------------------- steps

    def _results(self, workflow: WorkflowRecord) -> dict[int, str]:
        return {
            s.position: s.result_text or ""
            for s in workflow.current_plan()
            if s.state is StepState.SUCCEEDED
        }

    def _run_next_step(self, workflow: WorkflowRecord, worker: str) -> float | None:
        plan = workflow.current_plan()
        step = next((s for s in plan if s.state in (StepState.PENDING, StepState.RUNNING)), None)
        if step is None:
            return self._fail(workflow.id, worker, "plan ended without a final answer")
        results = self._results(workflow)
        user_input = last_user_message(workflow.messages)

        if step.kind is StepKind.FINAL:
            answer = render(step.prompt, results, user_input) if step.prompt else ""
            if not step.prompt:
                earlier = [s for s in plan if s.position < step.position]
                answer = earlier[-1].result_text or "" if earlier else ""
            with self.store.mutate(workflow.id, worker) as tx:
                running = step
                if step.state is StepState.PENDING:
                    running = tx.step_transition(
                        step, StepState.RUNNING, attempts=step.attempts + 1, started_at=tx.now
                    )
                tx.step_transition(
                    running,
                    StepState.SUCCEEDED,
                    data={"result": answer[:RESULT_EVENT_CHARS]},
                    result=answer,
                    result_text=answer,
                    finished_at=tx.now,
                )
                tx.set(final_answer=answer)
                tx.transition(WorkflowState.SUCCEEDED, "final answer given", final_answer=answer)
            return None

        budgets = workflow.budgets
        if step.state is StepState.PENDING and workflow.steps_used >= budgets.max_steps:
            return self._finish_budget(
                workflow.id, worker, f"step budget of {budgets.max_steps} exhausted"
            )
        if step.kind is StepKind.MODEL and workflow.tokens_used >= budgets.max_tokens:
            return self._finish_budget(
                workflow.id, worker, f"token budget of {budgets.max_tokens} exhausted"
            )
        if step.attempts >= self.settings.step_max_attempts:
            return self._step_failed(
                workflow, worker, step, f"step gave up after {step.attempts} attempts"
            )

        # Record the attempt before the side effect: a re-delivery then knows the call
        # may have happened and repeats it under the same idempotency key.
        with self.store.mutate(workflow.id, worker) as tx:
            if step.state is StepState.PENDING:
                tx.set(steps_used=workflow.steps_used + 1)
            step = tx.step_transition(
                step,
                StepState.RUNNING,
                data={"attempt": step.attempts + 1, "redelivered": step.state is StepState.RUNNING},
                attempts=step.attempts + 1,
                started_at=step.started_at or tx.now,
            )

        timeout_s = min(self.settings.call_timeout_s, self._remaining_s(workflow))
        request_id = f"{workflow.request_id or workflow.id}:{step.idempotency_key}"
        try:
            if step.kind is StepKind.TOOL:
                output = self.tools.invoke(
                    tool=step.tool,
                    arguments=render_arguments(step.arguments or {}, results, user_input),
                    workflow_id=workflow.id,
                    step_id=step.id,
                    idempotency_key=step.idempotency_key,
                    allowed_tools=workflow.allowed_tools,
                    timeout_s=timeout_s,
                    request_id=request_id,
                )
                result: Any = output.content
                text = output.text
                tokens = 0
            else:
                generation = self.models.generate(
                    model=workflow.model or self.settings.default_model,
                    messages=[
                        {"role": "system", "content": MODEL_STEP_SYSTEM},
                        {"role": "user", "content": render(step.prompt, results, user_input)},
                    ],
                    max_tokens=max(
                        min(
                            self.settings.step_max_tokens, budgets.max_tokens - workflow.tokens_used
                        ),
                        1,
                    ),
                    temperature=0.0,
                    json_schema=None,
                    timeout_s=timeout_s,
                    request_id=request_id,
                )
                result, text, tokens = generation.text, generation.text, generation.tokens
        except TransientError as exc:
            if self.clock() >= workflow.deadline_at:
                return self._finish_budget(
                    workflow.id,
                    worker,
                    f"wall-time budget of {budgets.max_wall_time_s:g}s exhausted",
                )
            return self._transient(workflow, worker, str(exc), step)
        except StepFailed as exc:
            return self._step_failed(workflow, worker, step, str(exc))
        return self._step_succeeded(workflow, worker, step, result, text, tokens)

    def _step_succeeded(
        self,
        workflow: WorkflowRecord,
        worker: str,
        step: StepRecord,
        result: Any,
        text: str,
        tokens: int,
    ) -> float | None:
        with self.store.mutate(workflow.id, worker) as tx:
            current = tx.step(step.id)
            if current.state is not StepState.RUNNING:
                # Cancelled while the call ran: keep what came back, start nothing new.
                _store_late_result(tx, step.id, result, text)
                return None
            tx.step_transition(
                current,
                StepState.SUCCEEDED,
                data={"result": text[:RESULT_EVENT_CHARS], "tokens": tokens},
                result=result,
                result_text=text,
                tokens=tokens,
                finished_at=tx.now,
                error=None,
            )
            used = workflow.tokens_used + tokens
            tx.set(tokens_used=used, not_before=0.0)
            if used > workflow.budgets.max_tokens:
                self._exceed_in(tx, f"token budget of {workflow.budgets.max_tokens} exhausted")
                return None
            # The common path: hand the chain on in this same transaction.
            token = new_dispatch()
            tx.release_lease(token)
        self._released[worker] = token
        return 0.0

    def _step_failed(
        self, workflow: WorkflowRecord, worker: str, step: StepRecord, error: str
    ) -> float | None:
        with self.store.mutate(workflow.id, worker) as tx:
            current = tx.step(step.id)
            if tx.state.terminal:
                return None
            if current.state is StepState.PENDING:
                current = tx.step_transition(
                    current, StepState.RUNNING, attempts=current.attempts + 1, started_at=tx.now
                )
            elif current.state is not StepState.RUNNING:
                return None
            tx.step_transition(
                current, StepState.FAILED, data={"error": error}, error=error, finished_at=tx.now
            )
            history = [
                *workflow.history,
                {
                    "plan_version": workflow.plan_version,
                    "step": step.position,
                    "kind": step.kind.value,
                    "tool": step.tool,
                    "error": error,
                },
            ]
            tx.set(history=history, not_before=0.0)
            if workflow.replans >= workflow.budgets.max_replans:
                reason = f"step {step.position} failed and the re-plan limit is reached: {error}"
                tx.skip_open_steps("workflow failed")
                tx.transition(WorkflowState.FAILED, reason)
                tx.set(error=reason)
                return None
            tx.skip_open_steps(f"re-planning after step {step.position} failed")
            tx.set(replans=workflow.replans + 1)
            tx.transition(WorkflowState.PLANNING, f"step {step.position} failed: {error}")
        return 0.0


def _store_late_result(tx: Tx, step_id: str, result: Any, text: str) -> None:
    tx.conn.execute(
        update(steps_table)
        .where(steps_table.c.id == step_id)
        .values(result=result, result_text=text, finished_at=tx.now)
    )
