"""sql_query: one read-only query on the configured database, as rows of JSON.

Layers, outermost first: the static scanner in ``sqlguard`` (one statement, read keywords
only, no side-effect functions); a check that the connected role is really read-only (not
superuser, no write privilege on any table, none of the server-file or signal roles); a
session opened with ``default_transaction_read_only=on``; a ``READ ONLY`` transaction with
``SET LOCAL statement_timeout``; a row limit applied while fetching; a rollback at the end.
The database role is the boundary that matters — create it with SELECT only (see README).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import decimal
import json
import uuid
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from lalo_tools.core import ErrorCode, Limits, ToolFailure, ToolResult
from lalo_tools.sqlguard import SqlRefused, check_read_only, first_keyword

_CURSOR = "lalo_tools_query"
_FETCH_BATCH = 100

_ROLE_CHECK = """
SELECT r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolbypassrls OR r.rolreplication,
       EXISTS (
         SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%'
           AND (has_table_privilege(c.oid, 'INSERT') OR has_table_privilege(c.oid, 'UPDATE')
                OR has_table_privilege(c.oid, 'DELETE') OR has_table_privilege(c.oid, 'TRUNCATE'))
       ),
       has_database_privilege(current_database(), 'CREATE'),
       EXISTS (
         SELECT 1 FROM unnest(ARRAY['pg_write_server_files', 'pg_read_server_files',
                                    'pg_execute_server_program', 'pg_signal_backend',
                                    'pg_write_all_data']) AS g(name)
         JOIN pg_roles pr ON pr.rolname = g.name
         WHERE pg_has_role(current_user, pr.oid, 'USAGE')
       )
FROM pg_roles r WHERE r.rolname = current_user
"""


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.date | datetime.time | datetime.datetime):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "base64:" + base64.b64encode(bytes(value)).decode()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class SqlQuery:
    name = "sql_query"
    description = (
        "Runs one read-only SQL query (PostgreSQL dialect: SELECT, WITH, VALUES, TABLE, "
        "EXPLAIN, SHOW) on the configured database and returns columns and rows."
    )

    def __init__(
        self,
        *,
        limits: Limits,
        database_url: str,
        statement_timeout_ms: int = 5000,
        max_query_chars: int = 10_000,
        require_readonly_role: bool = True,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.limits = limits
        self._url = database_url
        self.statement_timeout_ms = statement_timeout_ms
        self.require_readonly_role = require_readonly_role
        self.connect_timeout_s = connect_timeout_s
        self.parameters: dict[str, Any] = {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": max_query_chars},
            },
            "required": ["query"],
            "additionalProperties": False,
        }

    async def run(self, arguments: dict[str, Any], limits: Limits) -> ToolResult:
        query: str = arguments["query"]
        try:
            check_read_only(query)
        except SqlRefused as refused:
            raise ToolFailure(ErrorCode.NOT_ALLOWED, str(refused), path="$.query") from None
        timeout_ms = max(1, min(self.statement_timeout_ms, int(limits.timeout_s * 1000)))
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url,
                autocommit=False,
                connect_timeout=max(1, int(self.connect_timeout_s)),
                options=f"-c default_transaction_read_only=on -c statement_timeout={timeout_ms}",
                application_name="lalo-tools sql_query",
            )
        except psycopg.Error as exc:
            raise ToolFailure(
                ErrorCode.UPSTREAM_ERROR,
                f"cannot connect to the database: {_first_line(exc)}",
                retryable=True,
            ) from None
        try:
            await conn.set_read_only(True)
            async with conn.cursor() as cur:
                await cur.execute(
                    "SELECT set_config('statement_timeout', %s, true)", [str(timeout_ms)]
                )
                if self.require_readonly_role:
                    await self._check_role(cur)
                columns, rows = await self._fetch(cur, query, limits)
            return self._result(columns, rows, limits)
        except pg_errors.QueryCanceled:
            raise ToolFailure(ErrorCode.TIMEOUT, f"the query ran past {timeout_ms} ms") from None
        except (pg_errors.ReadOnlySqlTransaction, pg_errors.InsufficientPrivilege) as exc:
            raise ToolFailure(ErrorCode.NOT_ALLOWED, _first_line(exc), path="$.query") from None
        except psycopg.OperationalError as exc:
            raise ToolFailure(
                ErrorCode.UPSTREAM_ERROR, f"database error: {_first_line(exc)}", retryable=True
            ) from None
        except psycopg.Error as exc:
            raise ToolFailure(ErrorCode.EXECUTION_ERROR, _first_line(exc), path="$.query") from None
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.rollback()
            await conn.close()

    async def _fetch(
        self, cur: psycopg.AsyncCursor[Any], query: str, limits: Limits
    ) -> tuple[list[str], list[Any]]:
        """Run the query and bring back at most max_rows + 1 rows (and about the byte budget).

        Statements are sent prepared: the extended protocol refuses more than one statement
        whatever the scanner thought, and no % processing happens. Queries go through a
        server-side cursor so that only the rows fetched cross the wire — a plain execute
        would make libpq buffer the whole result (``generate_series(1, 1e9)``) in this
        process before the row limit applies. SHOW and EXPLAIN (small outputs, and not
        allowed in DECLARE) run directly.
        """
        wanted = limits.max_rows + 1
        if first_keyword(query) in ("SHOW", "EXPLAIN"):
            await cur.execute(query, prepare=True)
            if cur.description is None:
                raise ToolFailure(ErrorCode.NOT_ALLOWED, "the statement returned no rows")
            return [col.name for col in cur.description], await cur.fetchmany(wanted)
        await cur.execute(f"DECLARE {_CURSOR} NO SCROLL CURSOR FOR\n{query}\n", prepare=True)
        columns: list[str] = []
        rows: list[Any] = []
        size = 0
        while len(rows) < wanted and size <= limits.max_output_bytes:
            batch_size = min(_FETCH_BATCH, wanted - len(rows))
            await cur.execute(f"FETCH FORWARD {batch_size} FROM {_CURSOR}")
            if cur.description is not None and not columns:
                columns = [col.name for col in cur.description]
            batch = await cur.fetchall()
            rows.extend(batch)
            size += sum(len(str(row)) for row in batch)
            if len(batch) < batch_size:
                break
        return columns, rows

    async def _check_role(self, cur: psycopg.AsyncCursor[Any]) -> None:
        await cur.execute(_ROLE_CHECK)
        row = await cur.fetchone()
        if row is None:
            raise ToolFailure(ErrorCode.NOT_ALLOWED, "cannot inspect the database role")
        privileged, can_write, can_create, server_roles = row
        reasons = [
            text
            for flag, text in (
                (privileged, "is a superuser or can create roles/databases or bypass RLS"),
                (can_write, "can write to a table"),
                (can_create, "can create schemas"),
                (server_roles, "holds a server-file, program or signal role"),
            )
            if flag
        ]
        if reasons:
            raise ToolFailure(
                ErrorCode.NOT_ALLOWED,
                "sql_query refuses to run: the configured database role "
                + "; ".join(reasons)
                + " (configure a role with SELECT only)",
            )

    def _result(self, columns: list[str], rows: list[Any], limits: Limits) -> ToolResult:
        truncated = len(rows) > limits.max_rows
        rows = rows[: limits.max_rows]
        budget = limits.max_output_bytes - len(json.dumps(columns)) - 64
        kept: list[list[Any]] = []
        used = 0
        for row in rows:
            values = [_jsonable(v) for v in row]
            size = len(json.dumps(values, ensure_ascii=False).encode("utf-8")) + 1
            if used + size > budget:
                truncated = True
                break
            kept.append(values)
            used += size
        content = {"columns": columns, "rows": kept, "row_count": len(kept), "truncated": truncated}
        lines = ["\t".join(columns)]
        lines += ["\t".join("" if v is None else str(v) for v in row) for row in kept]
        if truncated:
            lines.append(f"... (truncated after {len(kept)} rows)")
        return ToolResult(content=content, text="\n".join(lines), truncated=truncated)


def _first_line(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
