"""Builds and runs the router's gRPC server."""

from __future__ import annotations

import logging

from lalo.router.v1 import router_pb2, router_pb2_grpc
from lalo_common.grpc_server import GrpcServer
from prometheus_client import start_http_server

from lalo_router.classify.model import ArtifactError
from lalo_router.complex_path import WorkflowChat
from lalo_router.embeddings import Embedder
from lalo_router.forwarding import ChatForwarder
from lalo_router.llm_classifier import LlmClassifier
from lalo_router.policy import (
    Classifier,
    EmbeddingStrategy,
    PolicyError,
    PolicyRouter,
    PolicySpec,
    Strategy,
    describe_policy,
    load_classifier,
    load_policy,
    merge_backends,
    replica_limits,
)
from lalo_router.replicas import ReplicaSet
from lalo_router.servicer import RouterServicer
from lalo_router.settings import RouterSettings
from lalo_router.workflows import WORKFLOW_SERVICE_NAME, add_workflow_service

log = logging.getLogger(__name__)
SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


def load_routing(settings: RouterSettings) -> tuple[PolicySpec, list[tuple[str, str]]]:
    """The checked policy and every (pool, target) to dial: the policy's replicas, plus
    LALO_ROUTER_BACKENDS for the pools the policy gives none. Raises PolicyError."""
    env_backends = settings.backend_list()
    spec = load_policy(
        settings.policy_path,
        settings.default_pool,
        {pool for pool, _ in env_backends},
        workflows=bool(settings.orchestrator_target),
    )
    backends = merge_backends(
        spec, env_backends, env_explicit="backends" in settings.model_fields_set
    )
    served = {pool for pool, _ in backends}
    for pool in spec.pools:
        if pool not in served:
            log.warning("pool %s has no replicas (policy or LALO_ROUTER_BACKENDS)", pool)
    return spec, backends


def build_strategy(
    settings: RouterSettings, classifier: Classifier | None, replicas: ReplicaSet
) -> Strategy | None:
    """The classification strategy settings ask for; None: "auto" goes to the default
    pool. The LLM strategy falls back to ``classifier``."""
    if settings.classifier == "llm":
        return LlmClassifier(
            settings.llm_model,
            target=settings.llm_target,
            replicas=None if settings.llm_target else replicas,
            service_token=settings.service_token.get_secret_value(),
            fallback=classifier,
            timeout_s=settings.llm_timeout_s,
            max_tokens=settings.llm_max_tokens,
        )
    return EmbeddingStrategy(classifier) if classifier is not None else None


def build_server(
    settings: RouterSettings,
    replicas: ReplicaSet,
    classifier: Classifier | None = None,
    *,
    policy: PolicySpec | None = None,
    strategy: Strategy | None = None,
) -> GrpcServer:
    """The router's gRPC server over ``replicas``; ``policy`` defaults to the file in
    settings, checked against the pools ``replicas`` has; ``strategy`` to the one settings
    name (the caller closes a strategy it passes)."""
    token = settings.service_token.get_secret_value()
    server = GrpcServer(
        service_names=[SERVICE_NAME, WORKFLOW_SERVICE_NAME],
        service_token=token,
        grace_period_s=settings.grace_period_s,
    )
    workflows = add_workflow_service(server, settings.orchestrator_target, service_token=token)
    enabled = bool(settings.orchestrator_target)
    if policy is None:
        policy = load_policy(
            settings.policy_path, settings.default_pool, replicas.pools(), workflows=enabled
        )
    router = PolicyRouter(
        policy,
        replicas,
        classifier,
        workflows_enabled=enabled,
        strategy=strategy or build_strategy(settings, classifier, replicas),
    )
    forwarder = ChatForwarder(
        replicas,
        router.route,
        settings.backend_timeout_s,
        workflows=WorkflowChat(workflows.stub) if enabled else None,
    )
    router_pb2_grpc.add_RouterServiceServicer_to_server(
        RouterServicer(
            forwarder,
            Embedder(replicas, settings.backend_timeout_s),
            replicas,
            workflows_enabled=enabled,
        ),
        server.server,
    )
    return server


async def serve(settings: RouterSettings) -> None:
    token = settings.service_token.get_secret_value()
    try:
        spec, backends = load_routing(settings)
    except PolicyError as exc:
        log.error("%s", exc)  # one readable message, not a traceback
        raise SystemExit(2) from None
    log.info(
        "routing policy %s: %s",
        settings.policy_path or "(no file: derived from the pools and the orchestrator)",
        describe_policy(spec),
    )
    replicas = ReplicaSet(backends, service_token=token, max_outstanding=replica_limits(spec))
    # The LLM strategy uses the embedding classifier too: p_escalate, and its fallback.
    try:
        classifier = load_classifier() if settings.classifier != "none" else None
    except ArtifactError as exc:
        log.error(
            "%s (LALO_ROUTER_CLASSIFIER=none runs the router without classification: "
            "'auto' requests then go to the default pool)",
            exc,
        )
        await replicas.close()
        raise SystemExit(2) from None
    strategy = build_strategy(settings, classifier, replicas)
    try:
        server = build_server(settings, replicas, classifier, policy=spec, strategy=strategy)
    except PolicyError as exc:
        log.error("%s", exc)
        await replicas.close()
        raise SystemExit(2) from None
    await replicas.refresh()
    replicas.start(settings.refresh_interval_s)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    try:
        port = await server.start(settings.listen)
        await server.set_serving(True)
        log.info(
            "router serving on port %d with %d backend(s), classifier %s",
            port,
            len(replicas.replicas),
            strategy.name if strategy is not None else "none",
        )
        await server.serve_until_signalled()
    finally:
        if strategy is not None:
            await strategy.close()
        await replicas.close()
