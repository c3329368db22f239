"""``lalo-router``: ``serve`` (the default) runs the gRPC server; ``predict``, ``eval`` and
``train`` are the classifier's commands (lalo_router.cli)."""

from __future__ import annotations

import sys

from lalo_common import aio

CLASSIFIER_COMMANDS = frozenset({"predict", "eval", "train"})


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in CLASSIFIER_COMMANDS:
        from lalo_router.cli import main as cli_main

        return cli_main(args)
    if args and args[0] not in ("serve",):
        print(
            f"lalo-router: unknown command {args[0]!r} (serve, predict, eval, train)",
            file=sys.stderr,
        )
        return 2
    from lalo_common.logging import configure_logging

    from lalo_router.server import serve
    from lalo_router.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json, service="router")
    aio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
