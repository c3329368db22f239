"""``lalo-gateway``: serve the API (default); other subcommands belong to lalo_gateway.cli."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] != "serve":
        from lalo_gateway.cli import main as cli_main

        return cli_main(args)
    import uvicorn
    from lalo_common.logging import configure_logging

    from lalo_gateway.app import create_app
    from lalo_gateway.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json, service="gateway")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=int(settings.grace_period_s),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
