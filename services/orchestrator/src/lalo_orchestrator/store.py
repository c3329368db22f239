"""Workflow state in the database: rows, legal transitions, events and worker leases.

Every change to a workflow happens in one transaction that first locks the workflow row
(``SELECT ... FOR UPDATE``; ``BEGIN IMMEDIATE`` on SQLite), so the changes of one
workflow are serialised and its events get gap-free sequence numbers 1, 2, 3, ... in
commit order. Events are handed to the publisher only after the commit.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from lalo_common.errors import FailedPrecondition, InvalidArgument, NotFound
from sqlalchemy import Connection, Engine, and_, insert, or_, select, update
from sqlalchemy.engine import RowMapping

from lalo_orchestrator.states import (
    StepKind,
    StepState,
    WorkflowState,
    check_step_transition,
    check_workflow_transition,
)
from lalo_orchestrator.tables import events, steps, workflows

Clock = Callable[[], float]


@dataclass(frozen=True)
class Budgets:
    max_steps: int
    max_wall_time_s: float
    max_tokens: int
    max_replans: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_steps": self.max_steps,
            "max_wall_time_s": self.max_wall_time_s,
            "max_tokens": self.max_tokens,
            "max_replans": self.max_replans,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Budgets:
        return cls(
            max_steps=int(data["max_steps"]),
            max_wall_time_s=float(data["max_wall_time_s"]),
            max_tokens=int(data["max_tokens"]),
            max_replans=int(data["max_replans"]),
        )


@dataclass(frozen=True)
class PlannedStep:
    kind: StepKind
    tool: str = ""
    arguments: dict[str, Any] | None = None
    prompt: str = ""


@dataclass(frozen=True)
class StepRecord:
    id: str
    workflow_id: str
    plan_version: int
    position: int
    kind: StepKind
    state: StepState
    tool: str
    arguments: dict[str, Any] | None
    prompt: str
    result: Any
    result_text: str | None
    error: str | None
    attempts: int
    tokens: int
    idempotency_key: str
    started_at: float | None
    finished_at: float | None

    @classmethod
    def from_row(cls, row: RowMapping) -> StepRecord:
        return cls(
            id=row["id"],
            workflow_id=row["workflow_id"],
            plan_version=row["plan_version"],
            position=row["position"],
            kind=StepKind(row["kind"]),
            state=StepState(row["state"]),
            tool=row["tool"] or "",
            arguments=row["arguments"],
            prompt=row["prompt"] or "",
            result=row["result"],
            result_text=row["result_text"],
            error=row["error"],
            attempts=row["attempts"],
            tokens=row["tokens"],
            idempotency_key=row["idempotency_key"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    def summary(self) -> dict[str, Any]:
        return {
            "plan_version": self.plan_version,
            "index": self.position,
            "kind": self.kind.value,
            "tool": self.tool,
            "arguments": self.arguments,
            "prompt": self.prompt,
        }


@dataclass(frozen=True)
class WorkflowRecord:
    id: str
    owner: str
    state: WorkflowState
    messages: list[dict[str, str]]
    allowed_tools: list[str]
    model: str
    request_id: str
    budgets: Budgets
    plan_version: int
    steps_used: int
    tokens_used: int
    replans: int
    history: list[dict[str, Any]]
    final_answer: str | None
    error: str | None
    event_seq: int
    lease_owner: str | None
    lease_expires_at: float | None
    not_before: float
    dispatch: str
    created_at: float
    updated_at: float
    deadline_at: float
    steps: tuple[StepRecord, ...] = ()

    @classmethod
    def from_row(cls, row: RowMapping, step_rows: Sequence[RowMapping] = ()) -> WorkflowRecord:
        request = row["request"]
        return cls(
            id=row["id"],
            owner=row["owner"],
            state=WorkflowState(row["state"]),
            messages=list(request.get("messages", [])),
            allowed_tools=list(request.get("allowed_tools", [])),
            model=request.get("model", ""),
            request_id=request.get("request_id", ""),
            budgets=Budgets.from_dict(row["budgets"]),
            plan_version=row["plan_version"],
            steps_used=row["steps_used"],
            tokens_used=row["tokens_used"],
            replans=row["replans"],
            history=list(row["history"] or []),
            final_answer=row["final_answer"],
            error=row["error"],
            event_seq=row["event_seq"],
            lease_owner=row["lease_owner"],
            lease_expires_at=row["lease_expires_at"],
            not_before=row["not_before"],
            dispatch=row["dispatch"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            deadline_at=row["deadline_at"],
            steps=tuple(StepRecord.from_row(s) for s in step_rows),
        )

    def current_plan(self) -> list[StepRecord]:
        return [s for s in self.steps if s.plan_version == self.plan_version]


@dataclass(frozen=True)
class EventRecord:
    seq: int
    workflow_id: str
    type: str
    workflow_state: WorkflowState
    step_id: str | None
    step_state: StepState | None
    data: dict[str, Any]
    created_at: float

    @classmethod
    def from_row(cls, row: RowMapping) -> EventRecord:
        return cls(
            seq=row["seq"],
            workflow_id=row["workflow_id"],
            type=row["type"],
            workflow_state=WorkflowState(row["workflow_state"]),
            step_id=row["step_id"],
            step_state=StepState(row["step_state"]) if row["step_state"] else None,
            data=row["data"],
            created_at=row["created_at"],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "workflow_id": self.workflow_id,
            "type": self.type,
            "workflow_state": self.workflow_state.value,
            "step_id": self.step_id,
            "step_state": self.step_state.value if self.step_state else None,
            "data": self.data,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EventRecord:
        return cls(
            seq=int(data["seq"]),
            workflow_id=data["workflow_id"],
            type=data["type"],
            workflow_state=WorkflowState(data["workflow_state"]),
            step_id=data.get("step_id"),
            step_state=StepState(data["step_state"]) if data.get("step_state") else None,
            data=data.get("data") or {},
            created_at=float(data["created_at"]),
        )


class LeaseLost(Exception):
    """This worker no longer holds the workflow's lease; another one took over."""


@dataclass(frozen=True)
class Claim:
    """Outcome of trying to take a workflow's lease."""

    status: str  # "claimed" | "busy" | "terminal" | "not_yet" | "stale"
    workflow: WorkflowRecord
    retry_in: float = 0.0


Publisher = Callable[[Sequence[EventRecord]], None]


def _no_publish(_events: Sequence[EventRecord]) -> None:
    return None


@dataclass
class Tx:
    """One locked transaction on a workflow; collects updates and events."""

    conn: Connection
    workflow: WorkflowRecord
    now: float
    values: dict[str, Any] = field(default_factory=dict)
    new_events: list[EventRecord] = field(default_factory=list)

    @property
    def state(self) -> WorkflowState:
        return WorkflowState(self.values.get("state", self.workflow.state))

    def set(self, **values: Any) -> None:
        self.values.update(values)

    def event(
        self,
        type_: str,
        data: dict[str, Any] | None = None,
        *,
        step: StepRecord | None = None,
        step_state: StepState | None = None,
    ) -> None:
        seq = self.workflow.event_seq + len(self.new_events) + 1
        record = EventRecord(
            seq=seq,
            workflow_id=self.workflow.id,
            type=type_,
            workflow_state=self.state,
            step_id=step.id if step else None,
            step_state=step_state,
            data=data or {},
            created_at=self.now,
        )
        self.conn.execute(
            insert(events).values(
                workflow_id=record.workflow_id,
                seq=record.seq,
                type=record.type,
                workflow_state=record.workflow_state.value,
                step_id=record.step_id,
                step_state=record.step_state.value if record.step_state else None,
                data=record.data,
                created_at=record.created_at,
            )
        )
        self.new_events.append(record)

    def transition(self, target: WorkflowState, reason: str = "", **data: Any) -> None:
        current = self.state
        check_workflow_transition(current, target)
        self.values["state"] = target.value
        payload: dict[str, Any] = {"from": current.value, "to": target.value}
        if reason:
            payload["reason"] = reason
        payload.update(data)
        self.event("workflow.state", payload)

    def step(self, step_id: str) -> StepRecord:
        row = self.conn.execute(select(steps).where(steps.c.id == step_id)).mappings().one()
        return StepRecord.from_row(row)

    def step_transition(
        self,
        step: StepRecord,
        target: StepState,
        *,
        data: dict[str, Any] | None = None,
        **values: Any,
    ) -> StepRecord:
        check_step_transition(step.state, target)
        values["state"] = target.value
        self.conn.execute(update(steps).where(steps.c.id == step.id).values(**values))
        payload: dict[str, Any] = {
            "from": step.state.value,
            "to": target.value,
            **step.summary(),
            **(data or {}),
        }
        self.event("step.state", payload, step=step, step_state=target)
        values["state"] = target
        return replace(step, **values)

    def release_lease(self, next_dispatch: str | None) -> None:
        """Give the lease back in this transaction (saves one round of its own)."""
        self.values.update(lease_owner=None, lease_expires_at=None)
        if next_dispatch is not None:
            self.values["dispatch"] = next_dispatch

    def add_plan(self, planned: Sequence[PlannedStep], plan_version: int) -> list[StepRecord]:
        records = []
        for position, item in enumerate(planned, start=1):
            step_id = str(uuid.uuid4())
            self.conn.execute(
                insert(steps).values(
                    id=step_id,
                    workflow_id=self.workflow.id,
                    plan_version=plan_version,
                    position=position,
                    kind=item.kind.value,
                    state=StepState.PENDING.value,
                    tool=item.tool or None,
                    arguments=item.arguments,
                    prompt=item.prompt or None,
                    attempts=0,
                    tokens=0,
                    # Deterministic, so every attempt of a step presents the same key.
                    idempotency_key=f"{self.workflow.id}:{plan_version}:{position}",
                )
            )
            records.append(self.step(step_id))
        self.values["plan_version"] = plan_version
        return records

    def skip_open_steps(self, reason: str) -> None:
        rows = self.conn.execute(
            select(steps).where(
                steps.c.workflow_id == self.workflow.id,
                steps.c.state.in_([StepState.PENDING.value, StepState.RUNNING.value]),
            )
        ).mappings()
        for row in list(rows):
            self.step_transition(
                StepRecord.from_row(row),
                StepState.SKIPPED,
                data={"reason": reason},
                error=reason,
                finished_at=self.now,
            )


class WorkflowStore:
    def __init__(
        self,
        engine: Engine,
        *,
        publisher: Publisher = _no_publish,
        clock: Clock = time.time,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.clock = clock

    # ----------------------------------------------------------------- reads

    def get(self, workflow_id: str, owner: str = "") -> WorkflowRecord:
        with self.engine.connect() as conn:
            return self._load(conn, workflow_id, owner)

    def _load(
        self,
        conn: Connection,
        workflow_id: str,
        owner: str = "",
        *,
        lock: bool = False,
        with_steps: bool = True,
    ) -> WorkflowRecord:
        query = select(workflows).where(workflows.c.id == workflow_id)
        if lock:
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None or (owner and row["owner"] != owner):
            raise NotFound(f"workflow {workflow_id} not found")
        if not with_steps:
            return WorkflowRecord.from_row(row)
        step_rows = (
            conn.execute(
                select(steps)
                .where(steps.c.workflow_id == workflow_id)
                .order_by(steps.c.plan_version, steps.c.position)
            )
            .mappings()
            .all()
        )
        return WorkflowRecord.from_row(row, step_rows)

    def list_for_owner(
        self, owner: str, *, limit: int = 50, before_id: str = ""
    ) -> list[WorkflowRecord]:
        with self.engine.connect() as conn:
            query = select(workflows.c.id).where(workflows.c.owner == owner)
            if before_id:
                anchor = conn.execute(
                    select(workflows.c.created_at).where(
                        workflows.c.id == before_id, workflows.c.owner == owner
                    )
                ).scalar()
                if anchor is None:
                    raise InvalidArgument(f"before_id {before_id} is not one of your workflows")
                query = query.where(
                    or_(
                        workflows.c.created_at < anchor,
                        and_(workflows.c.created_at == anchor, workflows.c.id < before_id),
                    )
                )
            ids = conn.execute(
                query.order_by(workflows.c.created_at.desc(), workflows.c.id.desc()).limit(limit)
            ).scalars()
            return [self._load(conn, wid) for wid in list(ids)]

    def events_after(
        self, workflow_id: str, after_seq: int, *, limit: int = 500
    ) -> list[EventRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(events)
                .where(events.c.workflow_id == workflow_id, events.c.seq > after_seq)
                .order_by(events.c.seq)
                .limit(limit)
            ).mappings()
            return [EventRecord.from_row(r) for r in rows]

    # ----------------------------------------------------------------- writes

    def create(
        self,
        *,
        owner: str,
        messages: list[dict[str, str]],
        allowed_tools: list[str],
        budgets: Budgets,
        model: str = "",
        request_id: str = "",
    ) -> WorkflowRecord:
        workflow_id = str(uuid.uuid4())
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(
                insert(workflows).values(
                    id=workflow_id,
                    owner=owner,
                    state=WorkflowState.PENDING.value,
                    request={
                        "messages": messages,
                        "allowed_tools": allowed_tools,
                        "model": model,
                        "request_id": request_id,
                    },
                    budgets=budgets.as_dict(),
                    plan_version=0,
                    steps_used=0,
                    tokens_used=0,
                    replans=0,
                    history=[],
                    event_seq=0,
                    not_before=0.0,
                    nudged_at=0.0,
                    dispatch=new_dispatch(),
                    created_at=now,
                    updated_at=now,
                    deadline_at=now + budgets.max_wall_time_s,
                )
            )
            # The creation event commits with the row: no workflow exists without it.
            tx = Tx(conn=conn, workflow=self._load(conn, workflow_id, with_steps=False), now=now)
            tx.event(
                "workflow.created",
                {"state": WorkflowState.PENDING.value, "budgets": budgets.as_dict()},
            )
            conn.execute(update(workflows).where(workflows.c.id == workflow_id).values(event_seq=1))
        self.publisher(tx.new_events)
        return self.get(workflow_id)

    @contextmanager
    def mutate(self, workflow_id: str, worker: str | None = None) -> Iterator[Tx]:
        """Lock the workflow, yield a Tx, write it, commit, then publish its events.

        With ``worker`` set, the transaction is fenced: it fails with LeaseLost unless
        that worker still holds the lease.
        """
        with self.engine.begin() as conn:
            # Steps are not loaded here: a Tx reads the ones it touches.
            workflow = self._load(conn, workflow_id, lock=True, with_steps=False)
            if worker is not None and workflow.lease_owner != worker:
                raise LeaseLost(f"workflow {workflow_id} lease is not held by {worker}")
            tx = Tx(conn=conn, workflow=workflow, now=self.clock())
            yield tx
            values = dict(tx.values)
            if values or tx.new_events:
                values["updated_at"] = tx.now
                values["event_seq"] = workflow.event_seq + len(tx.new_events)
                conn.execute(
                    update(workflows).where(workflows.c.id == workflow_id).values(**values)
                )
        if tx.new_events:
            self.publisher(tx.new_events)

    def cancel(self, workflow_id: str, owner: str = "", reason: str = "") -> WorkflowRecord:
        self.get(workflow_id, owner)  # NotFound for other owners
        with self.mutate(workflow_id) as tx:
            if tx.state.terminal:
                raise FailedPrecondition(
                    f"workflow {workflow_id} already finished ({tx.state.value})"
                )
            message = reason or "cancelled by request"
            tx.skip_open_steps("workflow cancelled")
            tx.transition(WorkflowState.CANCELLED, message)
            tx.set(error=message)
        return self.get(workflow_id)

    # ----------------------------------------------------------------- leases

    def claim(self, workflow_id: str, worker: str, ttl_s: float, dispatch: str) -> Claim:
        """Take the workflow's lease for the task chain ``dispatch``.

        Refused when the message is a stale duplicate (its chain has moved on), when a
        live worker holds the lease, or before a scheduled retry is due.
        """
        with self.engine.begin() as conn:
            workflow = self._load(conn, workflow_id, lock=True)
            now = self.clock()
            if workflow.state.terminal:
                return Claim("terminal", workflow)
            if workflow.dispatch != dispatch:
                return Claim("stale", workflow)
            if (
                workflow.lease_owner
                and workflow.lease_owner != worker
                and (workflow.lease_expires_at or 0) > now
            ):
                return Claim("busy", workflow, (workflow.lease_expires_at or now) - now)
            if workflow.not_before > now:
                return Claim("not_yet", workflow, workflow.not_before - now)
            conn.execute(
                update(workflows)
                .where(workflows.c.id == workflow_id)
                .values(lease_owner=worker, lease_expires_at=now + ttl_s)
            )
        return Claim("claimed", replace(workflow, lease_owner=worker, lease_expires_at=now + ttl_s))

    def renew(self, workflow_id: str, worker: str, ttl_s: float) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(workflows)
                .where(workflows.c.id == workflow_id, workflows.c.lease_owner == worker)
                .values(lease_expires_at=self.clock() + ttl_s)
            )
            return bool(result.rowcount)

    def release(self, workflow_id: str, worker: str, *, next_dispatch: str | None = None) -> None:
        """Give the lease back; with ``next_dispatch``, hand the chain to a new task."""
        values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
        if next_dispatch is not None:
            values["dispatch"] = next_dispatch
        with self.engine.begin() as conn:
            conn.execute(
                update(workflows)
                .where(workflows.c.id == workflow_id, workflows.c.lease_owner == worker)
                .values(**values)
            )

    def stalled(self, stall_after_s: float, *, limit: int = 100) -> list[tuple[str, str]]:
        """Workflows nobody is moving: no live lease, nothing due, quiet for a while.

        Each is given a new dispatch token (so messages of the old chain, should any
        still exist, are dropped as stale) and stamped ``nudged_at``, so that concurrent
        sweepers (one per worker) do not all restart it. Returns (id, dispatch) pairs.
        """
        now = self.clock()
        quiet_since = now - stall_after_s
        open_states = [s.value for s in WorkflowState if not s.terminal]
        with self.engine.begin() as conn:
            candidates = conn.execute(
                select(workflows.c.id)
                .where(
                    workflows.c.state.in_(open_states),
                    or_(workflows.c.lease_expires_at.is_(None), workflows.c.lease_expires_at < now),
                    workflows.c.updated_at < quiet_since,
                    workflows.c.nudged_at < quiet_since,
                    workflows.c.not_before < now,
                )
                .limit(limit)
            ).scalars()
            nudged = []
            for workflow_id in list(candidates):
                token = new_dispatch()
                result = conn.execute(
                    update(workflows)
                    .where(
                        workflows.c.id == workflow_id,
                        workflows.c.nudged_at < quiet_since,
                        or_(
                            workflows.c.lease_expires_at.is_(None),
                            workflows.c.lease_expires_at < now,
                        ),
                    )
                    .values(nudged_at=now, dispatch=token)
                )
                if result.rowcount:
                    nudged.append((workflow_id, token))
            return nudged


def new_dispatch() -> str:
    return uuid.uuid4().hex
