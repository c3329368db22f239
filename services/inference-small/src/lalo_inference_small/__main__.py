"""``lalo-inference-small``: serve the configured GGUF models over gRPC."""

from __future__ import annotations

import sys

from lalo_common import aio
from lalo_common.logging import configure_logging

from lalo_inference_small.catalog import CatalogError
from lalo_inference_small.server import serve
from lalo_inference_small.settings import get_settings


def main() -> int:
    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json, service="inference-small")
    try:
        aio.run(serve(settings))
    except CatalogError as exc:
        print(f"lalo-inference-small: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
