"""``lalo-inference-large``: serve the configured model over gRPC until SIGTERM."""

from __future__ import annotations

import logging
import sys

from lalo_common import aio
from lalo_common.logging import configure_logging

from lalo_inference_large.server import build_server
from lalo_inference_large.settings import InferenceLargeSettings, get_settings
from lalo_inference_large.vllm_backend import ENGINE_MISSING, vllm_available

log = logging.getLogger("lalo_inference_large")


class LoadFailed(RuntimeError):
    """The backend could not start (the engine refused the model, the upstream is down)."""


async def serve(settings: InferenceLargeSettings) -> None:
    server = build_server(settings)
    port = await server.start()
    log.info("inference-large listening on port %d (not serving until the model is up)", port)
    try:
        try:
            await server.load()
        except Exception as exc:
            # vLLM's own traceback (the engine's root cause) is already in the log above.
            raise LoadFailed(f"could not load {settings.model_name!r}: {exc}") from exc
        await server.grpc.serve_until_signalled()
    finally:
        # The health watchdog stops before the engine does (it would find no engine).
        await server.stop()


def main() -> int:
    try:
        settings = get_settings()
    except ValueError as exc:
        print(f"inference-large: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, json_lines=settings.log_json, service="inference-large")
    if settings.backend == "vllm" and not vllm_available():
        print(f"inference-large: {ENGINE_MISSING}", file=sys.stderr)
        return 3
    try:
        aio.run(serve(settings))
    except LoadFailed as exc:
        log.error("%s", exc, exc_info=exc.__cause__)
        print(f"inference-large: {exc}", file=sys.stderr)
        return 4
    return 0


# vLLM spawns its engine process, which re-imports the main module: nothing may run on import.
if __name__ == "__main__":
    sys.exit(main())
