"""``lalo-tools``: run the tools gRPC server until SIGTERM/SIGINT."""

from __future__ import annotations

import logging

from lalo_common import aio
from lalo_common.logging import configure_logging

from lalo_tools.server import build_server
from lalo_tools.settings import get_settings

log = logging.getLogger("lalo_tools")


async def serve() -> None:
    settings = get_settings()
    server = build_server(settings)
    port = await server.start(settings.listen_address)
    await server.set_serving(True)
    log.info("tools service listening on %s (port %d)", settings.listen_address, port)
    await server.serve_until_signalled()


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json, service="tools")
    aio.run(serve())


if __name__ == "__main__":
    main()
