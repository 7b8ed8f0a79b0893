"""Manage API keys: `api_keys create NAME [--scope read|read_write] [--expires-in-days N]`,
`api_keys list`, `api_keys revoke PREFIX`. The key is printed once, at creation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from search.models import ApiKey
from search.services import api_key_create, api_key_revoke


class Command(BaseCommand):
    help = "Create, list and revoke API keys for server-to-server clients."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="action", required=True)
        create = commands.add_parser("create", help="create a key and print it once")
        create.add_argument("name", help="who uses the key, e.g. storefront")
        create.add_argument("--scope", choices=ApiKey.Scope.values, default=ApiKey.Scope.READ)
        create.add_argument("--expires-in-days", type=int, default=None)
        create.add_argument("--rate", default="", help="e.g. 600/min (default: the API's)")
        commands.add_parser("list", help="list keys (never their secrets)")
        revoke = commands.add_parser("revoke", help="revoke a key by its prefix")
        revoke.add_argument("prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "create":
            days = options["expires_in_days"]
            if days is not None and days <= 0:
                raise CommandError("--expires-in-days must be positive.")
            try:
                issued = api_key_create(
                    name=options["name"],
                    scope=options["scope"],
                    expires_at=timezone.now() + timedelta(days=days) if days else None,
                    rate=options["rate"],
                )
            except ValueError as error:
                raise CommandError(str(error)) from None
            self.stdout.write(f"Created {issued.api_key}. The key (shown only now):")
            self.stdout.write(issued.plaintext)
        elif action == "list":
            for key in ApiKey.objects.all():
                state = (
                    "revoked" if key.revoked_at else ("usable" if key.is_usable() else "expired")
                )
                expires = key.expires_at.isoformat() if key.expires_at else "never"
                self.stdout.write(
                    f"{key.prefix}  {key.scope:<10}  {state:<7}  expires {expires}  {key.name}"
                )
        else:
            try:
                key = api_key_revoke(prefix=options["prefix"])
            except ApiKey.DoesNotExist:
                raise CommandError(f"No API key with prefix {options['prefix']!r}.") from None
            self.stdout.write(f"Revoked {key}.")
