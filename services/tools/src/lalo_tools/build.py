"""Builds the tool registry from settings: which tools exist and with what ceilings."""

from __future__ import annotations

import logging

from lalo_tools.core import Limits, Tool
from lalo_tools.registry import ToolRegistry
from lalo_tools.settings import ToolsSettings
from lalo_tools.tools.calculator import Calculator
from lalo_tools.tools.http_fetch import HttpFetch
from lalo_tools.tools.python_exec import PythonExec, SandboxConfig
from lalo_tools.tools.sql_query import SqlQuery

log = logging.getLogger(__name__)


def build_tools(settings: ToolsSettings) -> list[Tool]:
    enabled = set(settings.enabled_tools)
    out_bytes = settings.max_output_bytes
    tools: list[Tool] = []
    if "calculator" in enabled:
        tools.append(
            Calculator(
                limits=Limits(settings.calculator_timeout_s, out_bytes, 0),
                max_expression_chars=settings.calculator_max_expression_chars,
                max_bits=settings.calculator_max_bits,
            )
        )
    if "http_fetch" in enabled:
        if not settings.http_allowed_hosts:
            log.warning("http_fetch is enabled with an empty host allowlist: every URL is refused")
        tools.append(
            HttpFetch(
                limits=Limits(settings.http_timeout_s, out_bytes, 0),
                allowed_hosts=settings.http_allowed_hosts,
                allowed_ports=settings.http_allowed_ports,
                max_redirects=settings.http_max_redirects,
                max_body_bytes=settings.http_max_body_bytes,
                user_agent=settings.http_user_agent,
                allow_loopback=settings.http_test_allow_loopback,
            )
        )
    if "sql_query" in enabled:
        url = settings.sql_database_url.get_secret_value()
        if url:
            tools.append(
                SqlQuery(
                    limits=Limits(
                        settings.sql_statement_timeout_ms / 1000 + 2.0,
                        out_bytes,
                        settings.sql_max_rows,
                    ),
                    database_url=url,
                    statement_timeout_ms=settings.sql_statement_timeout_ms,
                    max_query_chars=settings.sql_max_query_chars,
                    require_readonly_role=settings.sql_require_readonly_role,
                )
            )
        else:
            log.info("sql_query is not offered: LALO_TOOLS_SQL_DATABASE_URL is not set")
    if "python" in enabled:
        python = _python_tool(settings, out_bytes)
        if python is not None:
            tools.append(python)
    return tools


def _python_tool(settings: ToolsSettings, out_bytes: int) -> PythonExec | None:
    """The python tool, or None (logged) when this host cannot sandbox it."""
    try:
        python = PythonExec(
            limits=Limits(settings.python_wall_timeout_s + 1.0, out_bytes, 0),
            config=SandboxConfig(
                cpu_s=settings.python_cpu_s,
                wall_timeout_s=settings.python_wall_timeout_s,
                memory_bytes=settings.python_memory_bytes,
                file_bytes=settings.python_max_file_bytes,
                work_bytes=settings.python_scratch_bytes,
                open_files=settings.python_max_open_files,
                processes=settings.python_max_processes,
                max_code_chars=settings.python_max_code_chars,
                max_concurrent=settings.python_max_concurrent,
                scratch_root=settings.python_scratch_root,
                python=settings.python_executable,
                sandbox_uid=settings.python_sandbox_uid,
                sandbox_gid=settings.python_sandbox_gid,
                require_isolation=settings.python_require_network_isolation,
            ),
        )
    except ValueError as exc:
        log.error("python tool is enabled but NOT offered: %s", exc)
        return None
    problem = python.probe()
    if problem is not None:
        log.error("python tool is enabled but NOT offered: %s", problem)
        return None
    return python


def build_registry(settings: ToolsSettings) -> ToolRegistry:
    return ToolRegistry(build_tools(settings), max_arguments_bytes=settings.max_arguments_bytes)
