#!/usr/bin/env python3
"""Lint, render and schema-validate the LALO Helm chart for every hardware profile, offline.

For each ``deploy/profiles/*.yaml``: ``helm lint --strict`` and ``helm template`` with the
profile (plus ``deploy/profiles/ci/secrets.yaml``, which names an existing Secret the way an
operator would), then every rendered object is validated against the Kubernetes JSON schemas
in strict mode (unknown fields are errors) with ``kubernetes-validate``. Kinds without a
schema fail, except the declared CRDs (LeaderWorkerSet, ScaledObject, ServiceMonitor), which
get a structural check of their own.

Usage: ``python deploy/tools/check_chart.py`` (needs helm: see fetch_helm.py).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "deploy" / "helm" / "lalo"
PROFILES = REPO_ROOT / "deploy" / "profiles"
CI_VALUES = PROFILES / "ci"
# Rendered for the oldest supported Kubernetes (native gRPC probes are GA in 1.27) and
# validated against that and the newest schema kubernetes-validate ships.
KUBE_VERSION = "1.27.0"
SCHEMA_VERSIONS = ("1.27", "1.37")

# The only kinds without a Kubernetes schema the chart may emit, and what each must carry.
DECLARED_CRDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): (
        "spec.leaderWorkerTemplate.size",
        "spec.leaderWorkerTemplate.leaderTemplate.spec.containers",
        "spec.leaderWorkerTemplate.workerTemplate.spec.containers",
    ),
    ("keda.sh/v1alpha1", "ScaledObject"): ("spec.scaleTargetRef.name", "spec.triggers"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("spec.selector", "spec.endpoints"),
}


class ChartError(RuntimeError):
    """helm failed; the message carries its output."""


def profiles() -> list[Path]:
    return sorted(PROFILES.glob("*.yaml"))


def _helm(helm: Path, *args: str) -> str:
    result = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise ChartError(f"helm {' '.join(args[:1])} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def values_args(values: Iterable[Path]) -> list[str]:
    return [arg for path in values for arg in ("-f", str(path))]


def lint(helm: Path, values: Iterable[Path]) -> str:
    return _helm(helm, "lint", "--strict", str(CHART), *values_args(values))


def render(
    helm: Path, values: Iterable[Path], sets: Iterable[str] = (), release: str = "lalo"
) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", "lalo", "--kube-version", KUBE_VERSION]
    args += values_args(values)
    for item in sets:
        args += ["--set", item]
    return [doc for doc in yaml.safe_load_all(_helm(helm, *args)) if doc]


def _dig(obj: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def describe(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{_dig(doc, 'metadata.name')}"


@cache
def _schema_available(version: str) -> None:
    from kubernetes_validate import utils

    if version not in {utils.major_minor(v) for v in utils.all_versions()}:
        raise ChartError(f"kubernetes-validate has no schemas for Kubernetes {version}")


def validate(
    docs: Iterable[dict[str, Any]], versions: Iterable[str] = SCHEMA_VERSIONS
) -> list[str]:
    """Problems with rendered objects: schema violations, unknown kinds, bad CRD objects."""
    from kubernetes_validate import utils

    problems: list[str] = []
    for doc in docs:
        key = (str(doc.get("apiVersion")), str(doc.get("kind")))
        if key in DECLARED_CRDS:
            problems += [
                f"{describe(doc)}: missing {path}"
                for path in DECLARED_CRDS[key]
                if _dig(doc, path) in (None, [], {})
            ]
            if not _dig(doc, "metadata.name"):
                problems.append(f"{describe(doc)}: missing metadata.name")
            continue
        for version in versions:
            _schema_available(version)
            try:
                utils.validate(doc, version, strict=True)
            except utils.SchemaNotFoundError:
                problems.append(
                    f"{describe(doc)}: unknown kind {key[1]} ({key[0]}) for Kubernetes {version}"
                    " and not a declared CRD"
                )
                break
            except utils.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                problems.append(f"{describe(doc)} (k8s {version}): {path}: {exc.message}")
    return problems


def check_all(helm: Path) -> list[str]:
    problems: list[str] = []
    secrets = CI_VALUES / "secrets.yaml"
    for profile in profiles():
        values = [profile, secrets]
        try:
            lint(helm, values)
            docs = render(helm, values)
        except ChartError as exc:
            problems.append(f"{profile.name}: {exc}")
            continue
        problems += [f"{profile.name}: {p}" for p in validate(docs)]
        print(f"{profile.name}: {len(docs)} objects rendered and validated", file=sys.stderr)
    return problems


def main() -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from fetch_helm import HelmUnavailableError, ensure_helm

    try:
        helm = ensure_helm()
    except HelmUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    problems = check_all(helm)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
