"""The static SQL scanner: one read statement, no write keywords, no side-effect functions."""

from __future__ import annotations

import pytest
from lalo_tools.sqlguard import SqlRefused, check_read_only, scan

READS = [
    "select 1",
    "SELECT 1;",
    "  select 1 ;  -- trailing comment",
    "with t as (select 1 as x) select x from t",
    "values (1), (2)",
    "table pg_namespace",
    "explain select 1",
    "show server_version",
    "select 'a;b', 'it''s; delete'",
    "select $$ ; drop table t $$",
    "select $tag$ insert $tag$",
    'select "update", "delete" from t',
    "select E'\\'; drop table t; --'",
    "select 1 /* ; insert */",
    "select 1 /* nested /* ; */ still comment */",
    "select x from t where y like 'a%'",
    "select pg_sleep(0.1)",
]
WRITES = [
    ("insert into t values (1)", "only read queries"),
    ("update t set x = 1", "only read queries"),
    ("delete from t", "only read queries"),
    ("drop table t", "only read queries"),
    ("create table t (x int)", "only read queries"),
    ("alter role x superuser", "only read queries"),
    ("truncate t", "only read queries"),
    ("grant all on t to public", "only read queries"),
    ("copy t to '/tmp/x'", "only read queries"),
    ("copy (select 1) to program 'id'", "only read queries"),
    ("do $$ begin perform 1; end $$", "only read queries"),
    ("call p()", "only read queries"),
    ("begin", "only read queries"),
    ("set role postgres", "only read queries"),
    ("select 1; select 2", "one statement"),
    ("select 1; delete from t", "one statement"),
    ("with d as (delete from t returning *) select * from d", "DELETE"),
    ("select * from t for update", "UPDATE"),
    ("select 1 into newtable", "INTO"),
    ("explain analyze delete from t", "ANALYZE"),
    ("select nextval('s')", "nextval"),
    ("select set_config('role', 'postgres', false)", "set_config"),
    ("select pg_read_file('/etc/passwd')", "pg_read_file"),
    ("select lo_import('/etc/passwd')", "lo_import"),
    ('select "pg_terminate_backend"(123)', "pg_terminate_backend"),
    ("select pg_catalog.pg_advisory_lock(1)", "pg_advisory_lock"),
    ("select dblink_exec('x', 'y')", "dblink"),
    ("", "empty"),
    (" ; ", "empty"),
    ("select 'unterminated", "unterminated"),
    ("select 1 /* open", "unterminated"),
    ("select $a$ open", "unterminated"),
]


@pytest.mark.parametrize("sql", READS)
def test_reads_pass(sql: str) -> None:
    check_read_only(sql)


@pytest.mark.parametrize(("sql", "reason"), WRITES)
def test_writes_are_refused(sql: str, reason: str) -> None:
    with pytest.raises(SqlRefused, match=reason):
        check_read_only(sql)


def test_scan_counts_statements_and_ignores_literals() -> None:
    result = scan("select 'x;y' ; select $q$;$q$;")
    assert result.statements == 2
    assert result.words == ["SELECT", "SELECT"]
