#!/usr/bin/env python3
"""Validate docker-compose.yml without Docker: the compose specification plus cross-references.

Steps, mirroring what ``docker compose config`` does before it validates: YAML anchors and
merge keys are resolved, ``${VAR}`` / ``${VAR:-default}`` / ``${VAR:?error}`` are
interpolated from an environment (``.env.example`` with its REQUIRED secrets filled by
placeholders), then the result is parsed by ``compose-spec`` (a strict implementation of the
Compose specification: unknown keys and malformed values are errors). On top of that:
every ``depends_on`` target exists and is not behind a profile the dependent lacks; a
``service_healthy`` target has a healthcheck and a ``service_completed_successfully`` target
does not restart; every named volume is declared; every bind-mount source, build context and
Dockerfile exists; every variable the file uses is documented in ``.env.example``.

Usage: ``python deploy/tools/check_compose.py`` (exit 1 with one line per problem).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"

_VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A ${VAR:?message} variable is unset or empty."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation rules for one string."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op == ":?" and not value:
            raise InterpolationError(f"{name}: {arg}")
        if op == "?" and value is None:
            raise InterpolationError(f"{name}: {arg}")
        return value or ""

    return _VARIABLE.sub(replace, text)


def variables_used(text: str) -> set[str]:
    return {
        m.group("braced") or m.group("bare") for m in _VARIABLE.finditer(text) if m.group(0) != "$$"
    }


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = value.strip().strip('"').strip("'")
    return env


def example_env() -> dict[str, str]:
    """.env.example with every empty value replaced by a placeholder, as an operator would."""
    return {
        key: value or f"placeholder-{key.lower()}"
        for key, value in read_env_file(ENV_EXAMPLE).items()
    }


def _walk(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, str):
        return interpolate(value, env)
    if isinstance(value, list):
        return [_walk(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, env) for k, v in value.items()}
    return value


def load(path: Path = COMPOSE_FILE, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose model after anchors, merge keys and interpolation."""
    raw = yaml.safe_load(path.read_text())
    model: dict[str, Any] = _walk(raw, example_env() if env is None else env)
    return model


def spec_errors(model: dict[str, Any]) -> list[str]:
    from compose_spec import PyCompose

    try:
        PyCompose.from_yaml(yaml.safe_dump(model, sort_keys=False)).validate()
    except ValueError as exc:
        return [f"compose specification: {exc}"]
    return []


def _depends(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return {name: (spec or {}) for name, spec in deps.items()}


def cross_reference_errors(model: dict[str, Any], root: Path = REPO_ROOT) -> list[str]:
    problems: list[str] = []
    services: dict[str, Any] = model.get("services") or {}
    volumes = set((model.get("volumes") or {}).keys())
    for name, service in services.items():
        profiles = set(service.get("profiles") or [])
        for target, spec in _depends(service).items():
            condition = spec.get("condition", "service_started")
            if target not in services:
                problems.append(f"{name}: depends_on unknown service {target!r}")
                continue
            dependency = services[target]
            target_profiles = set(dependency.get("profiles") or [])
            if target_profiles and not (target_profiles & profiles) and spec.get("required", True):
                problems.append(
                    f"{name}: depends on {target!r}, which only runs with profile(s) "
                    f"{sorted(target_profiles)}"
                )
            if condition == "service_healthy" and not dependency.get("healthcheck"):
                problems.append(
                    f"{name}: waits for {target!r} to be healthy but it has no healthcheck"
                )
            if condition == "service_completed_successfully" and dependency.get("restart") not in (
                "no",
                None,
            ):
                problems.append(f"{name}: waits for {target!r} to complete but it restarts")
        for mount in service.get("volumes") or []:
            if isinstance(mount, dict):
                kind, source = mount.get("type", "volume"), mount.get("source")
            else:
                source = str(mount).split(":", 1)[0] if ":" in str(mount) else None
                kind = "bind" if source and source.startswith((".", "/", "~")) else "volume"
            if not source:
                continue
            if kind == "volume" and source not in volumes:
                problems.append(
                    f"{name}: volume {source!r} is not declared under top-level volumes"
                )
            if kind == "bind" and source.startswith(".") and not (root / source).exists():
                problems.append(f"{name}: bind mount source {source} does not exist")
        build = service.get("build")
        if isinstance(build, str):
            build = {"context": build}
        if build:
            context = root / build.get("context", ".")
            if not context.is_dir():
                problems.append(f"{name}: build context {build.get('context')} does not exist")
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {build.get('dockerfile')} does not exist")
    used = {n for n in model.get("volumes") or {}}
    mentioned = {
        str(m).split(":", 1)[0] if not isinstance(m, dict) else m.get("source")
        for s in services.values()
        for m in s.get("volumes") or []
    }
    problems += [f"top-level volume {v!r} is never used" for v in sorted(used - mentioned)]
    return problems


def undocumented_variables(path: Path = COMPOSE_FILE) -> list[str]:
    documented = set(read_env_file(ENV_EXAMPLE))
    return [
        f"${{{name}}} is used in {path.name} but not documented in .env.example"
        for name in sorted(variables_used(path.read_text()) - documented)
    ]


def check() -> list[str]:
    model = load()
    return spec_errors(model) + cross_reference_errors(model) + undocumented_variables()


def main() -> int:
    problems = check()
    for problem in problems:
        print(problem)
    print(f"docker-compose.yml: {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
