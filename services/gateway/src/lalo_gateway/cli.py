"""Operator commands: ``lalo-gateway keys …``, ``lalo-gateway migrate``,
``lalo-gateway secrets …``. They talk to the gateway's database directly (same settings as
the server), so they work before any admin key exists: this is how the first admin key is
made.

    lalo-gateway keys create --owner ops --role admin
    lalo-gateway keys list [--owner X] [--all] [--json]
    lalo-gateway keys get|revoke|rotate KEY_ID
    lalo-gateway migrate
    lalo-gateway secrets generate-key | put NAME (value on stdin) | rotate
    lalo-gateway responses purge --older-than-days N
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from lalo_common.errors import LaloError

from lalo_gateway.security.apikeys import ApiKeyRecord
from lalo_gateway.security.runtime import Database
from lalo_gateway.security.secretbox import SecretBox, generate_secret_key, parse_keys, rotate_all
from lalo_gateway.security.settings import SecuritySettings

COMMANDS = ("keys", "migrate", "secrets", "responses")


def _settings() -> SecuritySettings:
    from lalo_gateway.settings import get_settings

    return get_settings()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lalo-gateway", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", help="create a key; its secret is printed once")
    create.add_argument("--owner", required=True)
    create.add_argument("--role", default="developer", choices=["admin", "developer", "viewer"])
    create.add_argument("--name", default="")
    create.add_argument("--models", default=None, help="comma-separated model allowlist")
    create.add_argument(
        "--rpm",
        type=int,
        default=None,
        help="requests per minute (0: unlimited; default: LALO_GATEWAY_DEFAULT_RPM)",
    )
    create.add_argument(
        "--tpm",
        type=int,
        default=None,
        help="tokens per minute (0: unlimited; default: LALO_GATEWAY_DEFAULT_TPM)",
    )
    create.add_argument("--expires-in-days", type=float, default=None)
    create.add_argument("--store-content", action="store_true", help="audit prompts/outputs")
    create.add_argument("--json", action="store_true")
    listing = keys.add_parser("list", help="list keys (secrets are never shown)")
    listing.add_argument("--owner", default=None)
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.add_argument("--json", action="store_true")
    for action, text in (
        ("get", "show one key"),
        ("revoke", "revoke a key (every replica within 1 s)"),
        ("rotate", "issue a new secret for a key; the old one stops working"),
    ):
        one = keys.add_parser(action, help=text)
        one.add_argument("key_id")
        one.add_argument("--json", action="store_true")

    sub.add_parser("migrate", help="apply database migrations (idempotent)")

    secrets = sub.add_parser("secrets", help="encrypted secrets").add_subparsers(
        dest="action", required=True
    )
    secrets.add_parser("generate-key", help="print a new Fernet key for LALO_GATEWAY_SECRET_KEYS")
    put = secrets.add_parser("put", help="store a secret read from stdin")
    put.add_argument("name")
    secrets.add_parser(
        "rotate",
        help="re-encrypt every stored secret under the first key in LALO_GATEWAY_SECRET_KEYS",
    )

    responses = sub.add_parser("responses", help="stored Responses API answers").add_subparsers(
        dest="action", required=True
    )
    purge = responses.add_parser("purge", help="delete stored responses older than N days")
    purge.add_argument("--older-than-days", type=float, required=True)
    return parser


def _view(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "prefix": record.prefix,
        "owner": record.owner,
        "role": record.role.value,
        "name": record.name,
        "allowed_models": None if record.allowed_models is None else sorted(record.allowed_models),
        "rpm": record.rpm,
        "tpm": record.tpm,
        "store_content": record.store_content,
        "created_at": record.created_at.isoformat(),
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        "source": record.source,
    }


def _print_key(record: ApiKeyRecord, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_view(record)))
        return
    state = "revoked" if record.revoked_at else "active"
    models = ",".join(sorted(record.allowed_models)) if record.allowed_models else "*"
    print(
        f"{record.id}  {record.prefix:<16} {record.role.value:<9} {state:<7} "
        f"owner={record.owner} models={models} rpm={record.rpm} tpm={record.tpm}"
    )


def _keys(args: argparse.Namespace, settings: SecuritySettings) -> int:
    db = Database.connect(settings, migrate=settings.migrate_on_start)
    try:
        keys = db.key_service(settings)
        if args.action == "create":
            new = keys.create(
                owner=args.owner,
                role=args.role,
                name=args.name,
                allowed_models=[m.strip() for m in args.models.split(",") if m.strip()]
                if args.models is not None
                else None,
                rpm=settings.default_rpm if args.rpm is None else args.rpm,
                tpm=settings.default_tpm if args.tpm is None else args.tpm,
                store_content=args.store_content,
                expires_at=datetime.now(UTC) + timedelta(days=args.expires_in_days)
                if args.expires_in_days
                else None,
                source="cli",
            )
            if args.json:
                print(json.dumps({**_view(new.record), "key": new.secret}))
            else:
                _print_key(new.record, False)
                print(f"key: {new.secret}")
                print("This is the only time the key is shown; store it now.", file=sys.stderr)
        elif args.action == "list":
            for record in keys.list(owner=args.owner, include_revoked=args.all, limit=10_000):
                _print_key(record, args.json)
        elif args.action == "get":
            _print_key(keys.get(args.key_id), args.json)
        elif args.action == "revoke":
            _print_key(keys.revoke(args.key_id), args.json)
        elif args.action == "rotate":
            new = keys.rotate(args.key_id)
            if args.json:
                print(json.dumps({**_view(new.record), "key": new.secret}))
            else:
                _print_key(new.record, False)
                print(f"key: {new.secret}")
                print("The previous secret no longer works.", file=sys.stderr)
    finally:
        db.engine.dispose()
    return 0


def _secrets(args: argparse.Namespace, settings: SecuritySettings) -> int:
    if args.action == "generate-key":
        print(generate_secret_key())
        return 0
    from lalo_gateway.db.repositories import SqlSecretStore

    box = SecretBox(parse_keys(settings.secret_keys.get_secret_value()))
    db = Database.connect(settings, migrate=settings.migrate_on_start)
    try:
        store = SqlSecretStore(db.sessions)
        if args.action == "put":
            value = sys.stdin.read().rstrip("\n")
            if not value:
                print("error: no secret on stdin", file=sys.stderr)
                return 2
            store.put(args.name, box.encrypt(value))
            print(f"stored {args.name}")
        elif args.action == "rotate":
            count = rotate_all(box, list(store.items()), store.rewrite)
            print(f"re-encrypted {count} secret(s) under the newest key")
    finally:
        db.engine.dispose()
    return 0


def _responses(args: argparse.Namespace, settings: SecuritySettings) -> int:
    from lalo_gateway.db.repositories import SqlResponseStore

    if args.older_than_days < 0:
        print("error: --older-than-days must be 0 or more", file=sys.stderr)
        return 2
    db = Database.connect(settings, migrate=settings.migrate_on_start)
    try:
        before = datetime.now(UTC) - timedelta(days=args.older_than_days)
        count = SqlResponseStore(db.sessions).purge(before)
        print(f"deleted {count} stored response(s) created before {before.isoformat()}")
    finally:
        db.engine.dispose()
    return 0


def main(argv: Sequence[str] | None = None, settings: SecuritySettings | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = settings or _settings()
        if args.command == "migrate":
            logging.getLogger("lalo_gateway.db.migrate").setLevel(logging.INFO)
            db = Database.connect(settings, migrate=True)
            db.engine.dispose()
            return 0
        if args.command == "keys":
            return _keys(args, settings)
        if args.command == "responses":
            return _responses(args, settings)
        return _secrets(args, settings)
    except LaloError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except ValueError as exc:  # settings validation
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
