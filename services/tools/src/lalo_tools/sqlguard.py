"""A small SQL scanner for sql_query's static checks (a first line of defence only).

The boundary that holds is the database's: a role with nothing but SELECT, inside a
READ ONLY transaction. This scanner exists to refuse obvious writes early with a message a
planner can act on, and to refuse several statements in one call. It understands string
literals ('…', E'…', $tag$…$tag$), quoted identifiers and both comment styles, so keywords
inside them are not mistaken for statements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

READ_STATEMENTS = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "EXPLAIN", "SHOW"})

# Keywords that only appear in statements which write, lock, or change session state.
WRITE_KEYWORDS = frozenset(
    {
        "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "TRUNCATE", "CREATE", "ALTER", "DROP",
        "GRANT", "REVOKE", "COPY", "CALL", "DO", "LOCK", "VACUUM", "ANALYZE", "ANALYSE",
        "CLUSTER", "REINDEX", "REFRESH", "COMMENT", "SECURITY", "LISTEN", "NOTIFY", "UNLISTEN",
        "PREPARE", "EXECUTE", "DEALLOCATE", "DISCARD", "RESET", "SET", "BEGIN", "START",
        "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "IMPORT", "LOAD", "INTO",
        "CHECKPOINT", "REASSIGN",
    }
)  # fmt: skip

# Functions with effects outside the query's result (files, other sessions, sequences,
# locks, server state). Most need privileges a read-only role lacks; refused by name anyway.
SIDE_EFFECT_FUNCTIONS = frozenset(
    {
        "set_config", "nextval", "setval",
        "lo_import", "lo_export", "lo_create", "lo_unlink", "lo_put", "lo_from_bytea",
        "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_file_write",
        "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
        "pg_advisory_lock", "pg_advisory_xact_lock", "pg_advisory_lock_shared",
        "pg_advisory_xact_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_xact_lock",
        "pg_notify", "pg_logical_emit_message", "pg_switch_wal", "pg_create_restore_point",
        "pg_promote", "pg_backup_start", "pg_backup_stop", "txid_current", "dblink",
        "dblink_exec", "dblink_connect", "pg_create_logical_replication_slot",
        "pg_create_physical_replication_slot", "pg_drop_replication_slot",
    }
)  # fmt: skip

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


class SqlRefused(Exception):
    pass


@dataclass
class Scan:
    words: list[str] = field(default_factory=list)  # upper-cased, outside literals
    quoted: list[str] = field(default_factory=list)  # quoted identifiers, lower-cased
    statements: int = 0


def scan(sql: str) -> Scan:
    """Tokenise just enough to find words, quoted identifiers and statement separators."""
    out = Scan()
    i, n = 0, len(sql)
    has_content = False
    while i < n:
        ch = sql[i]
        if ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif ch == "/" and sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            if depth:
                raise SqlRefused("unterminated comment")
        elif ch == "'" or (ch in "eE" and sql.startswith("'", i + 1) and not _in_word(sql, i)):
            backslash = ch != "'"
            i = _skip_string(sql, i + (2 if backslash else 1), backslash)
            has_content = True
        elif ch == '"':
            end = sql.find('"', i + 1)
            while end >= 0 and sql.startswith('""', end):
                end = sql.find('"', end + 2)
            if end < 0:
                raise SqlRefused("unterminated quoted identifier")
            out.quoted.append(sql[i + 1 : end].replace('""', '"').lower())
            i = end + 1
            has_content = True
        elif ch == "$" and (m := _DOLLAR_TAG.match(sql, i)) and not _in_word(sql, i):
            tag = m.group(0)
            end = sql.find(tag, m.end())
            if end < 0:
                raise SqlRefused("unterminated dollar-quoted string")
            i = end + len(tag)
            has_content = True
        elif ch == ";":
            if has_content:
                out.statements += 1
            has_content = False
            i += 1
        elif m := _WORD.match(sql, i):
            out.words.append(m.group(0).upper())
            i = m.end()
            has_content = True
        else:
            if not ch.isspace():
                has_content = True
            i += 1
    if has_content:
        out.statements += 1
    return out


def _in_word(sql: str, i: int) -> bool:
    return i > 0 and (sql[i - 1].isalnum() or sql[i - 1] in "_$")


def _skip_string(sql: str, i: int, backslash: bool) -> int:
    n = len(sql)
    while i < n:
        ch = sql[i]
        if backslash and ch == "\\":
            i += 2
            continue
        if ch == "'":
            if sql.startswith("''", i):
                i += 2
                continue
            return i + 1
        i += 1
    raise SqlRefused("unterminated string literal")


def first_keyword(sql: str) -> str:
    """The statement's first keyword, upper-cased (empty when there is none)."""
    words = scan(sql).words
    return words[0] if words else ""


def check_read_only(sql: str) -> None:
    """Raise :class:`SqlRefused` unless ``sql`` is one statement that only reads."""
    result = scan(sql)
    if result.statements == 0:
        raise SqlRefused("the query is empty")
    if result.statements > 1:
        raise SqlRefused("only one statement per call is allowed")
    first = result.words[0] if result.words else ""
    if first not in READ_STATEMENTS:
        raise SqlRefused(
            f"only read queries are allowed ({', '.join(sorted(READ_STATEMENTS))}); "
            f"got {first or '?'}"
        )
    for word in result.words:
        if word in WRITE_KEYWORDS:
            raise SqlRefused(f"{word} is not allowed in a read-only query")
    for name in [w.lower() for w in result.words] + result.quoted:
        if name in SIDE_EFFECT_FUNCTIONS or name.startswith("dblink"):
            raise SqlRefused(f"function {name} is not allowed")
