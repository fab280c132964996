"""Write helm/sync-scorer/values.schema.json: the chart's `worker.config` checked against the
worker's own config model (worker/config.py), so that `helm template`/`install`/`lint` refuse at
render time what the worker would refuse at start (a key it does not know, a value out of range, a
section that is not a mapping) instead of a crash-looping pod.

    .venv/bin/python scripts/chart_values_schema.py          # rewrite the file
    .venv/bin/python scripts/chart_values_schema.py --check  # exit 1 if it is stale (the tests run this)

Rules between fields (co-partitioned input topics, max_buffered_ms >= window_ms +
allowed_lateness_ms, confluent needs schema_registry_url, the worker's drain within the pod's
grace period, no credentials in the ConfigMap) are `fail` checks in templates/_helpers.tpl: a JSON
schema cannot say them. librdkafka settings are checked by the worker only (librdkafka itself
knows which it takes).

The chart's own values (image, replicas, resources, autoscaling, ...) are typed here too, with the
bounds the API server (or KEDA) would refuse a manifest for: a negative replica count, a CPU of
"two", a pull policy the kubelet does not know rendered cleanly and failed only at `kubectl apply`
or later. The ports and serve.maxBodyMb keep their ranges in _helpers.tpl (their messages say
what the process does with them); here they are only typed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "helm" / "sync-scorer" / "values.schema.json"


def _trim(node: Any) -> Any:
    """Drop what only documents (titles, defaults: the worker fills those in); keep the checks."""
    if isinstance(node, dict):
        return {k: _trim(v) for k, v in node.items() if k not in ("title", "default")}
    if isinstance(node, list):
        return [_trim(v) for v in node]
    return node


def worker_config_schema() -> dict[str, Any]:
    from worker.config import WorkerConfig

    schema = _trim(WorkerConfig.model_json_schema())
    defs = schema.pop("$defs")
    # a topic given in part keeps its defaults, its name included (TopicsConfig._keep_defaults)
    defs["TopicConfig"].pop("required", None)
    # an empty bundle_dir is refused (it would read the working directory, which holds no bundle)
    for option in defs["ScoringConfig"]["properties"]["bundle_dir"]["anyOf"]:
        if option.get("type") == "string":
            option["pattern"] = r"\S"
    # instance_id comes from the pod's name (SYNC_SCORER_INSTANCE_ID); an empty one is refused
    schema["properties"]["instance_id"]["minLength"] = 1
    return {"defs": defs, "config": schema}


def _env_paths(model: Any) -> str:
    """Every SYNC_SCORER_* path of ``model``'s settings as one regex alternation (upper case):
    a section alone (its value JSON), or section__key down to the leaves; a dict of settings
    (librdkafka, secrets, ...) takes any key below it."""
    from typing import get_args, get_origin

    from pydantic import BaseModel

    alternatives = []
    for name, field in model.model_fields.items():
        options = get_args(field.annotation) if get_origin(field.annotation) is not dict else ()
        nested = [a for a in options or (field.annotation,) if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested:
            alternatives.append(f"{name.upper()}(__({_env_paths(nested[0])}))?")
        elif get_origin(field.annotation) is dict:
            alternatives.append(f"{name.upper()}(__.+)?")
        else:
            alternatives.append(name.upper())
    return "|".join(sorted(alternatives))


def env_name_rule() -> dict[str, Any]:
    """worker.extraEnv: a SYNC_SCORER_* name must name a setting, down to the leaf (the worker
    refuses one that does not, config.load_config and pydantic's extra=forbid: a section's name
    alone was checked, and SYNC_SCORER_WINDOWING__BLOK rendered and crash-looped the pod). The
    worker reads the names case-insensitively, so the patterns are too (Go's regexp, helm's
    engine). The value is checked by the worker only."""
    from worker.config import ENV_PREFIX, OTHER_ENV_NAMES, WorkerConfig

    others = "|".join(sorted(OTHER_ENV_NAMES))
    env_var = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1}, "value": {"type": "string"},
                       "valueFrom": {"type": "object"}},
        "if": {"properties": {"name": {"type": "string", "pattern": f"(?i)^{ENV_PREFIX}"}}},
        "then": {"properties": {"name": {"pattern": f"(?i)^({ENV_PREFIX}({_env_paths(WorkerConfig)})|{others})$"}}},
    }
    return {"type": "array", "items": env_var}


# A Kubernetes resource quantity (k8s.io/apimachinery resource.Quantity), not negative: "2",
# "500m", "3Gi", "1.5", "1e3"; a bare number is one too
_QUANTITY = {
    "type": ["string", "number"],
    "minimum": 0,
    "pattern": r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
}


def _obj(properties: dict[str, Any]) -> dict[str, Any]:
    """A section of the chart's values: its keys only (a misspelled one is refused, not ignored)."""
    return {"type": "object", "additionalProperties": False, "properties": properties}


_BOOL = {"type": "boolean"}


def _count(minimum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum}


def chart_defs() -> dict[str, Any]:
    """$defs of the chart's own values (Kubernetes fields), beside the worker config's."""
    return {
        "K8sQuantity": _QUANTITY,
        "K8sResources": _obj({
            "requests": {"type": "object", "additionalProperties": {"$ref": "#/$defs/K8sQuantity"}},
            "limits": {"type": "object", "additionalProperties": {"$ref": "#/$defs/K8sQuantity"}},
            "claims": {"type": "array", "items": {"type": "object"}},
        }),
    }


# worker's and serve's pod placement, as Kubernetes types it
_SCHEDULING = {
    "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
    "tolerations": {"type": "array", "items": {"type": "object"}},
    "affinity": {"type": "object"},
}


def chart_values(worker_config: dict[str, Any]) -> dict[str, Any]:
    """The properties of values.yaml, each typed and bounded as the API server would bound it."""
    grace = {"type": "integer", "minimum": 0, "description": "seconds; checked against the process's "
             "own shutdown time in templates/_helpers.tpl"}
    return {
        "image": _obj({
            "repository": {"type": "string", "minLength": 1},
            # a number is a tag too (--set image.tag=123 gives one, a values file's 20240101 too):
            # rendered as the whole number; one that is not whole (YAML reads 1.10 as 1.1) is
            # refused in _helpers.tpl, where the message can say what to do (helm does not print this)
            "tag": {"type": ["string", "number"],
                    "description": "default: the chart's appVersion. A number is rendered as a whole number "
                    "(123, 20240101); quote a tag such as \"1.10\" (YAML reads it as the number 1.1) or pass "
                    "it with --set-string image.tag=1.10"},
            "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        }),
        "kafka": _obj({"bootstrapServers": {"type": "string"}}),
        "worker": _obj({
            "enabled": _BOOL,
            "replicas": _count(0),
            "config": worker_config,
            "extraEnv": env_name_rule(),
            "envFrom": {"type": "array", "items": {"type": "object"}},
            "extraVolumes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
            "extraVolumeMounts": {"type": "array", "items": {"type": "object", "required": ["name", "mountPath"]}},
            "terminationGracePeriodSeconds": grace,
            "resources": {"$ref": "#/$defs/K8sResources"},
            "gpu": _obj({"enabled": _BOOL, "count": _count(1)}),
            "autoscaling": _obj({"enabled": _BOOL, "minReplicas": _count(1), "maxReplicas": _count(1),
                                 # of the CPU request; above 100 is allowed (requests < limits)
                                 "targetCPUUtilizationPercentage": _count(1)}),
            "keda": _obj({"enabled": _BOOL, "minReplicas": _count(0), "maxReplicas": _count(1),
                          "lagThreshold": _count(1),
                          "authenticationRef": {"type": "object", "properties": {"name": {"type": "string"}}}}),
            "podDisruptionBudget": _obj({
                "enabled": _BOOL,
                # a count or a percentage (one schema, not anyOf: one line when refused)
                "maxUnavailable": {"type": ["integer", "string"], "minimum": 0, "pattern": r"^[0-9]+%$"},
            }),
            **_SCHEDULING,
        }),
        "serve": _obj({
            "enabled": _BOOL,
            "replicas": _count(0),
            # ranges in _helpers.tpl (1..65535; grpcPort -1 for none; maxBodyMb (0, 1024])
            "port": {"type": "integer"},
            "grpcPort": {"type": "integer"},
            # `--set x=0.5` gives the string "0.5" (helm makes numbers of integers only)
            "maxBodyMb": {"type": ["number", "string"]},
            # serve's --shutdown-grace-s (0..3600, checked in _helpers.tpl for a string too)
            "shutdownGraceSeconds": {"type": ["number", "string"], "minimum": 0, "maximum": 3600,
                                     "pattern": r"^[0-9]+(\.[0-9]*)?$"},
            "terminationGracePeriodSeconds": grace,
            "resources": {"$ref": "#/$defs/K8sResources"},
            **_SCHEDULING,
        }),
    }


def values_schema() -> dict[str, Any]:
    parts = worker_config_schema()
    config = {**parts["config"], "description": "The worker's config file (worker/config.py); env "
              "SYNC_SCORER_* wins over it."}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": "Generated by scripts/chart_values_schema.py from worker/config.py: do not edit.",
        "type": "object",
        # other top-level keys pass (a parent chart's `global`)
        "properties": chart_values(config),
        "$defs": {**parts["defs"], **chart_defs()},
    }


def render() -> str:
    return json.dumps(values_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(REPO)} is stale: run .venv/bin/python scripts/chart_values_schema.py",
                  file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
