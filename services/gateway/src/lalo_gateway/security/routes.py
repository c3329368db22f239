"""Reading the app's route table back: which routes exist and which permission each needs.

Used by the route sweep test and by :func:`unprotected_routes`, which ``create_app`` can call
to refuse to start with a route that has no permission (default deny).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from lalo_gateway.security.http import PUBLIC_PATHS, RequirePermission
from lalo_gateway.security.rbac import Permission


@dataclass(frozen=True)
class RouteInfo:
    path: str  # full template, prefixes included
    methods: frozenset[str]
    permission: Permission | None
    api_route: bool

    @property
    def public(self) -> bool:
        return self.path in PUBLIC_PATHS


def _permissions(dependant: Any) -> list[Permission]:
    found: list[Permission] = []
    for dep in getattr(dependant, "dependencies", []):
        if isinstance(dep.call, RequirePermission):
            found.append(dep.call.permission)
        found += _permissions(dep)
    return found


def _flatten(app: FastAPI) -> Iterator[tuple[str, set[str], Any]]:
    try:  # FastAPI >= 0.16x keeps included routers as branches of the route table
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI flattens include_router into app.routes
        for route in app.routes:
            yield getattr(route, "path", ""), set(getattr(route, "methods", None) or ()), route
        return
    for context in iter_route_contexts(app.routes):
        yield context.path or "", set(context.methods or ()), context.original_route


def route_table(app: FastAPI) -> list[RouteInfo]:
    table = []
    for path, methods, route in _flatten(app):
        is_api = isinstance(route, APIRoute)
        perms = _permissions(route.dependant) if is_api else []
        table.append(
            RouteInfo(
                path=path,
                methods=frozenset(methods - {"HEAD", "OPTIONS"}),
                permission=perms[0] if perms else None,
                api_route=is_api,
            )
        )
    return table


def unprotected_routes(app: FastAPI) -> list[str]:
    """Routes that are neither public nor guarded by a permission."""
    return [
        f"{','.join(sorted(r.methods))} {r.path}"
        for r in route_table(app)
        if not r.public and r.permission is None
    ]
