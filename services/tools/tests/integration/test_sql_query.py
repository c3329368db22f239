"""sql_query against real Postgres through a role that has SELECT and nothing else.

The test creates its own schema, table and login role (random names, dropped afterwards),
then attacks the tool with writes. Each write is tried twice: through the tool as shipped
(the scanner refuses it) and with the scanner bypassed, to show the database itself
(read-only transaction, SELECT-only role) still refuses it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from lalo_tools.core import ErrorCode, Limits, ToolFailure
from lalo_tools.tools import sql_query as sql_query_module
from lalo_tools.tools.sql_query import SqlQuery
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

pytestmark = pytest.mark.integration

ADMIN_URL = os.environ.get(
    "LALO_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
).replace("postgresql+psycopg://", "postgresql://")
LIMITS = Limits(timeout_s=5.0, max_output_bytes=64 * 1024, max_rows=100)


@dataclass
class Database:
    schema: str
    role: str
    readonly_url: str


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    suffix = secrets.token_hex(4)
    schema, role = f"lalo_tools_t_{suffix}", f"lalo_tools_ro_{suffix}"
    password = secrets.token_hex(16)
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        ident_schema, ident_role = sql.Identifier(schema), sql.Identifier(role)
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(ident_schema))
        admin.execute(
            sql.SQL("CREATE TABLE {}.items (id int PRIMARY KEY, name text, price numeric)").format(
                ident_schema
            )
        )
        admin.execute(
            sql.SQL(
                "INSERT INTO {}.items"
                " SELECT g, 'item ' || g, g * 1.25 FROM generate_series(1, 500) g"
            ).format(ident_schema)
        )
        admin.execute(sql.SQL("CREATE SEQUENCE {}.counter").format(ident_schema))
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                ident_role, sql.Literal(password)
            )
        )
        admin.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident_schema, ident_role))
        admin.execute(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(
                ident_schema, ident_role
            )
        )
        admin.execute(
            sql.SQL("ALTER ROLE {} SET search_path = {}, public").format(ident_role, ident_schema)
        )
    params = conninfo_to_dict(ADMIN_URL)
    params.update(user=role, password=password)
    try:
        yield Database(schema=schema, role=role, readonly_url=make_conninfo(**params))
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def tool(database: Database) -> SqlQuery:
    return SqlQuery(limits=LIMITS, database_url=database.readonly_url, statement_timeout_ms=2000)


@pytest.fixture
def unscanned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch the static scanner off so the database's own defences are what is tested."""
    monkeypatch.setattr(sql_query_module, "check_read_only", lambda _sql: None)


async def query(tool: SqlQuery, text: str, limits: Limits = LIMITS) -> dict[str, object]:
    result = await tool.run({"query": text}, limits)
    assert isinstance(result.content, dict)
    return result.content


async def refusal(tool: SqlQuery, text: str, limits: Limits = LIMITS) -> ToolFailure:
    with pytest.raises(ToolFailure) as info:
        await tool.run({"query": text}, limits)
    return info.value


async def test_select_returns_rows(tool: SqlQuery) -> None:
    content = await query(tool, "SELECT id, name, price FROM items WHERE id <= 3 ORDER BY id")
    assert content["columns"] == ["id", "name", "price"]
    assert content["rows"] == [[1, "item 1", "1.25"], [2, "item 2", "2.50"], [3, "item 3", "3.75"]]
    assert content["truncated"] is False


@pytest.mark.parametrize(
    "statement",
    [
        "SHOW statement_timeout",
        "EXPLAIN SELECT * FROM items",
        "TABLE items",
        "VALUES (1, 'a'), (2, 'b')",
        "WITH cheap AS (SELECT * FROM items WHERE price < 5) SELECT count(*) FROM cheap",
        "SELECT name FROM items WHERE name LIKE 'item 1%' LIMIT 2 -- comment; with semicolon",
    ],
)
async def test_every_read_form_works(tool: SqlQuery, statement: str) -> None:
    content = await query(tool, statement)
    assert content["rows"]


async def test_row_limit(tool: SqlQuery) -> None:
    content = await query(tool, "SELECT id FROM items ORDER BY id")
    assert content["row_count"] == LIMITS.max_rows
    assert content["truncated"] is True
    few = Limits(timeout_s=5.0, max_output_bytes=64 * 1024, max_rows=5)
    assert (await query(tool, "SELECT id FROM items", few))["row_count"] == 5


async def test_huge_results_are_not_transferred(tool: SqlQuery) -> None:
    """A hundred million rows: only the rows kept cross the wire (a server-side cursor).

    Buffered client-side, this result would take gigabytes in the tools service and run
    past the 2 s statement timeout; streamed, the first rows come back at once.
    """
    few = Limits(timeout_s=5.0, max_output_bytes=64 * 1024, max_rows=5)
    content = await query(tool, "SELECT generate_series(1, 100000000) AS g", few)
    assert content["rows"] == [[1], [2], [3], [4], [5]]
    assert content["truncated"] is True


async def test_output_limit(tool: SqlQuery) -> None:
    tiny = Limits(timeout_s=5.0, max_output_bytes=300, max_rows=1000)
    result = await tool.run({"query": "SELECT repeat('x', 100) FROM items"}, tiny)
    assert result.truncated
    assert len(result.content_json()) < 600


async def test_statement_timeout(tool: SqlQuery) -> None:
    failure = await refusal(
        tool, "SELECT pg_sleep(5)", Limits(timeout_s=0.3, max_output_bytes=1000, max_rows=1)
    )
    assert failure.code is ErrorCode.TIMEOUT


async def test_sql_errors_are_execution_errors(tool: SqlQuery) -> None:
    failure = await refusal(tool, "SELECT no_such_column FROM items")
    assert failure.code is ErrorCode.EXECUTION_ERROR
    assert "no_such_column" in failure.message


WRITES = [
    "INSERT INTO items VALUES (1000, 'x', 1)",
    "UPDATE items SET price = 0",
    "DELETE FROM items",
    "TRUNCATE items",
    "DROP TABLE items",
    "CREATE TABLE stolen (x int)",
    "ALTER TABLE items ADD COLUMN y int",
    "COPY items TO STDOUT",
    "COPY (SELECT 1) TO PROGRAM 'id'",
    "WITH d AS (DELETE FROM items RETURNING *) SELECT count(*) FROM d",
    "SELECT * FROM items FOR UPDATE",
    "SELECT * INTO stolen FROM items",
    "SELECT nextval('counter')",
    "SELECT 1; DELETE FROM items",
    "GRANT SELECT ON items TO PUBLIC",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT lo_import('/etc/passwd')",
]
# Refused by the scanner; harmless past it (the session is discarded after each call and
# the running transaction stays read-only), so not in the database-level list.
SESSION_STATE = ["SELECT set_config('default_transaction_read_only', 'off', false)"]


@pytest.mark.parametrize("statement", WRITES + SESSION_STATE)
async def test_writes_are_refused_by_the_tool(tool: SqlQuery, statement: str) -> None:
    failure = await refusal(tool, statement)
    assert failure.code is ErrorCode.NOT_ALLOWED


@pytest.mark.parametrize("statement", WRITES)
async def test_writes_are_refused_by_the_database_too(
    tool: SqlQuery, unscanned: None, statement: str
) -> None:
    failure = await refusal(tool, statement)
    assert failure.code in (ErrorCode.NOT_ALLOWED, ErrorCode.EXECUTION_ERROR), failure
    # Whatever happened, nothing changed.
    content = await query(tool, "SELECT count(*), sum(price) FROM items")
    assert content["rows"] == [[500, "156562.50"]]


async def test_a_superuser_connection_is_refused(database: Database) -> None:
    privileged = SqlQuery(limits=LIMITS, database_url=ADMIN_URL)
    failure = await refusal(privileged, "SELECT 1")
    assert failure.code is ErrorCode.NOT_ALLOWED
    assert "superuser" in failure.message


async def test_a_role_that_can_write_is_refused(database: Database) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(
            sql.SQL("GRANT INSERT ON {}.items TO {}").format(
                sql.Identifier(database.schema), sql.Identifier(database.role)
            )
        )
    try:
        tool = SqlQuery(limits=LIMITS, database_url=database.readonly_url)
        failure = await refusal(tool, "SELECT 1")
        assert failure.code is ErrorCode.NOT_ALLOWED
        assert "can write" in failure.message
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("REVOKE INSERT ON {}.items FROM {}").format(
                    sql.Identifier(database.schema), sql.Identifier(database.role)
                )
            )


async def test_unreachable_database_is_an_upstream_error() -> None:
    tool = SqlQuery(
        limits=LIMITS, database_url="postgresql://nobody@127.0.0.1:1/none", connect_timeout_s=1
    )
    failure = await refusal(tool, "SELECT 1")
    assert failure.code is ErrorCode.UPSTREAM_ERROR
    assert failure.retryable
