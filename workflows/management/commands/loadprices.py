from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workflows.errors import ApplicationError
from workflows.services.list_prices import genai_prices_version
from workflows.services.prices import prices_load


class Command(BaseCommand):
    help = (
        "Load the price table from a prices file (default: PRICES_FILE): list prices from genai-prices for the "
        "models it names, then its local overrides. Prints the count of rows written last."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", type=Path, default=None)

    def handle(self, *args, **options):
        path = options["file"] or settings.PRICES_FILE
        try:
            loaded = prices_load(path=path)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        kept = f", {loaded.list_rows_kept_local} kept local" if loaded.list_rows_kept_local else ""
        self.stdout.write(
            f"Loaded {loaded.rows} prices from {path}: {loaded.list_rows} list prices from "
            f"genai-prices {genai_prices_version()}{kept}, {loaded.local_rows} local."
        )
        self.stdout.write(str(loaded.rows))
