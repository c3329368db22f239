#!/usr/bin/env python3
"""Container health probe shared by every LALO image (Docker HEALTHCHECK, compose).

``healthcheck.py grpc HOST:PORT`` asks the standard ``grpc.health.v1`` service (which every
LALO gRPC server registers and which needs no service token); ``healthcheck.py http URL``
expects a 2xx answer. Exit 0 means healthy, 1 unhealthy. Kubernetes does not use this
script: the chart declares native gRPC and HTTP probes instead.
"""

from __future__ import annotations

import sys
import urllib.request


def check_grpc(target: str, timeout: float) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def check_http(url: str, timeout: float) -> bool:
    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise ValueError(f"health URL must be local, got {url!r}")
    with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 (local URL only)
        return 200 <= int(reply.status) < 300


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in {"grpc", "http"}:
        print("usage: healthcheck.py grpc HOST:PORT | http URL", file=sys.stderr)
        return 2
    try:
        healthy = check_grpc(argv[2], 3.0) if argv[1] == "grpc" else check_http(argv[2], 3.0)
    except Exception as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
