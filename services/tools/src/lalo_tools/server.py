"""Assembles the tools gRPC server from settings (nothing is built at import time)."""

from __future__ import annotations

import logging

from lalo.tools.v1 import tools_pb2, tools_pb2_grpc
from lalo_common.grpc_server import GrpcServer

from lalo_tools.build import build_registry
from lalo_tools.registry import ToolRegistry
from lalo_tools.servicer import ToolsServicer
from lalo_tools.settings import ToolsSettings

log = logging.getLogger(__name__)

SERVICE_NAME = tools_pb2.DESCRIPTOR.services_by_name["ToolsService"].full_name


def build_server(settings: ToolsSettings, registry: ToolRegistry | None = None) -> GrpcServer:
    registry = registry or build_registry(settings)
    server = GrpcServer(
        service_names=[SERVICE_NAME],
        service_token=settings.service_token.get_secret_value(),
        grace_period_s=settings.grace_period_s,
    )
    tools_pb2_grpc.add_ToolsServiceServicer_to_server(ToolsServicer(registry), server.server)
    log.info("tools offered: %s", ", ".join(registry.names) or "(none)")
    return server
