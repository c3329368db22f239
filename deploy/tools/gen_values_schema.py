#!/usr/bin/env python3
"""Generate deploy/helm/lalo/values.schema.json from values.yaml.

Helm validates every install, upgrade, lint and template against values.schema.json, so an
operator's misspelt key (``inferenceLarge.tensorParalelSize``) fails loudly instead of being
ignored. The schema is derived from the defaults: each mapping only admits the keys it has,
except the free-form ones listed below (resources, selectors, env, policies, ...); scalars
keep their type; a few fields get enums. ``tests/deploy`` fails when the committed schema is
stale: run ``python deploy/tools/gen_values_schema.py`` after changing values.yaml.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "lalo"
SCHEMA = CHART / "values.schema.json"

# Mappings whose keys are the operator's (Kubernetes objects, env, model pins, policies).
FREE_FORM = {
    "resources",
    "requests",
    "limits",
    "nodeSelector",
    "affinity",
    "env",
    "policy",
    "sha256",
    "annotations",
    "labels",
    "podAnnotations",
    "podLabels",
    "podSecurityContext",
    "containerSecurityContext",
    "metricsNamespaceSelector",
}
ENUMS = {
    ("global", "environment"): ["development", "embedded", "production"],
    ("global", "imagePullPolicy"): ["Always", "IfNotPresent", "Never"],
    ("gateway", "jwt", "mode"): ["off", "jwks", "pem", "hs256"],
    ("gateway", "service", "type"): ["ClusterIP", "NodePort", "LoadBalancer"],
}
# Integer-or-percentage fields.
INT_OR_STRING = {"maxUnavailable"}
# Items of these lists are objects with exactly the keys of the default's first item.
REQUIRED_ITEM_KEYS = {("inferenceSmall", "models"): ["id", "repo", "file"]}


def schema_for(value: Any, path: tuple[str, ...]) -> dict[str, Any]:
    key = path[-1] if path else ""
    if path in ENUMS:
        return {"type": "string", "enum": ENUMS[path]}
    if key in INT_OR_STRING:
        return {"type": ["integer", "string"]}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        if path in REQUIRED_ITEM_KEYS and value and isinstance(value[0], dict):
            item = schema_for(value[0], (*path, "[]"))
            item["required"] = REQUIRED_ITEM_KEYS[path]
            return {"type": "array", "items": item}
        return {"type": "array"}
    if isinstance(value, dict):
        if key in FREE_FORM or not value:
            return {"type": "object"}
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: schema_for(v, (*path, k)) for k, v in value.items()},
        }
    return {}


def generate() -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = schema_for(values, ())
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "LALO Helm chart values (generated from values.yaml)",
        **schema,
    }


def render() -> str:
    return json.dumps(generate(), indent=2) + "\n"


def main() -> int:
    SCHEMA.write_text(render())
    print(SCHEMA)
    return 0


if __name__ == "__main__":
    sys.exit(main())
