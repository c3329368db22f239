"""Builds and runs the router's gRPC server."""

from __future__ import annotations

import logging

from lalo.router.v1 import router_pb2, router_pb2_grpc
from lalo_common.grpc_server import GrpcServer
from prometheus_client import start_http_server

from lalo_router.complex_path import WorkflowChat
from lalo_router.forwarding import ChatForwarder
from lalo_router.policy import Classifier, PolicyRouter, load_classifier, load_policy
from lalo_router.replicas import ReplicaSet
from lalo_router.servicer import RouterServicer
from lalo_router.settings import RouterSettings
from lalo_router.workflows import WORKFLOW_SERVICE_NAME, add_workflow_service

log = logging.getLogger(__name__)
SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


def build_server(
    settings: RouterSettings, replicas: ReplicaSet, classifier: Classifier | None = None
) -> GrpcServer:
    token = settings.service_token.get_secret_value()
    server = GrpcServer(
        service_names=[SERVICE_NAME, WORKFLOW_SERVICE_NAME],
        service_token=token,
        grace_period_s=settings.grace_period_s,
    )
    workflows = add_workflow_service(server, settings.orchestrator_target, service_token=token)
    enabled = bool(settings.orchestrator_target)
    policy = PolicyRouter(
        load_policy(settings.policy_path, settings.default_pool),
        replicas,
        classifier,
        workflows_enabled=enabled,
    )
    forwarder = ChatForwarder(
        replicas,
        policy.decide,
        settings.backend_timeout_s,
        workflows=WorkflowChat(workflows.stub) if enabled else None,
    )
    router_pb2_grpc.add_RouterServiceServicer_to_server(
        RouterServicer(forwarder, replicas, workflows_enabled=enabled), server.server
    )
    return server


async def serve(settings: RouterSettings) -> None:
    token = settings.service_token.get_secret_value()
    replicas = ReplicaSet(settings.backend_list(), service_token=token)
    await replicas.refresh()
    replicas.start(settings.refresh_interval_s)
    classifier = load_classifier() if settings.classifier == "embedding" else None
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    server = build_server(settings, replicas, classifier)
    try:
        port = await server.start(settings.listen)
        await server.set_serving(True)
        log.info("router serving on port %d with %d backend(s)", port, len(replicas.replicas))
        await server.serve_until_signalled()
    finally:
        await replicas.close()
