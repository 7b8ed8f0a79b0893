"""`manage.py embedding_models list|register|activate|rollback|retire|retry|evaluate`."""

from __future__ import annotations

import getpass
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from embeddings import selectors
from embeddings.models import EmbeddingModel
from embeddings.services.errors import EmbeddingModelStateError
from embeddings.services.evaluation import embedding_model_evaluate
from embeddings.services.lifecycle import (
    embedding_model_activate_gated,
    embedding_model_retire,
    embedding_model_rollback,
)
from embeddings.services.registry import embedding_model_register, embedding_model_retry


def _get(key: str) -> EmbeddingModel:
    try:
        return selectors.embedding_model_get(key=key)
    except EmbeddingModel.DoesNotExist:
        raise CommandError(f"no model version {key!r} (see `embedding_models list`)") from None


class Command(BaseCommand):
    help = "List and manage embedding model versions (blue/green switches and rollback)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser(
            "list", help="list versions with state, backfill progress and products queued"
        )
        register = actions.add_parser("register", help="register a spec as a building version")
        register.add_argument("spec", help="default | checkpoint:<dir> | open_clip:<arch>:<tag>")
        register.add_argument("--key", help="version key (default: <spec>-v<n>)")
        register.add_argument(
            "--activate-when-ready", action="store_true", help="activate once backfilled"
        )
        activate = actions.add_parser("activate", help="make a version active (atomic)")
        activate.add_argument("key")
        activate.add_argument("--force", action="store_true", help="even if still backfilling")
        activate.add_argument(
            "--reason",
            default="",
            help="why, when it does not beat the active version on the held-out split "
            "(recorded on the version)",
        )
        actions.add_parser("rollback", help="re-activate the previously active version")
        for name, text in (
            ("retire", "delete a version's vectors and indexes"),
            ("retry", "prepare a failed version again"),
            ("evaluate", "evaluate a version on the catalog here and store its metrics"),
        ):
            actions.add_parser(name, help=text).add_argument("key")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "list":
                self._list()
            elif action == "register":
                model = embedding_model_register(
                    spec=options["spec"],
                    key=options["key"],
                    auto_activate=options["activate_when_ready"],
                )
                self.stdout.write(f"registered {model.key} (building; a worker prepares it)")
            elif action == "activate":
                model = embedding_model_activate_gated(
                    model=_get(options["key"]),
                    force=options["force"],
                    reason=options["reason"],
                    user=getpass.getuser(),
                )
                self.stdout.write(f"{model.key} is active")
            elif action == "rollback":
                self.stdout.write(f"{embedding_model_rollback().key} is active again")
            elif action == "retire":
                self.stdout.write(
                    f"{embedding_model_retire(model=_get(options['key'])).key} retired"
                )
            elif action == "retry":
                model = embedding_model_retry(model=_get(options["key"]))
                self.stdout.write(f"{model.key} queued for preparation again")
            elif action == "evaluate":
                metrics = embedding_model_evaluate(model=_get(options["key"]))
                for name, cells in sorted(metrics.get("metrics", {}).items()):
                    values = ", ".join(f"{c}={v['value']:.3f}" for c, v in sorted(cells.items()))
                    self.stdout.write(f"{name}: {values}")
        except EmbeddingModelStateError as error:
            raise CommandError(str(error)) from None

    def _list(self) -> None:
        rows = selectors.embedding_model_list()
        if not rows:
            self.stdout.write("no model versions (the sweeper registers the default one)")
        maintained = {m.pk for m in selectors.embedding_models_maintained()}
        for m in rows:
            if m.pk in maintained:
                # Counted now rather than the sweeper's last figures: before a rollback an
                # operator wants to see that the ready version has every product, current.
                live = selectors.embedding_model_progress(model=m)
                progress = f"{live.done}/{live.total} ({live.percent}%)"
                queued = str(selectors.embedding_model_pending_count(model=m))
            else:
                progress = f"{m.backfill_done}/{m.backfill_total} ({m.backfill_percent}%)"
                queued = "-"
            self.stdout.write(
                f"{m.key:24} {m.state:9} dim={m.dimension or '-':<5} "
                f"sha={(m.weights_sha256 or '-')[:12]:12} backfill={progress:18} "
                f"queued={queued:<6} {m.spec}" + (f"\n    error: {m.error}" if m.error else "")
            )
