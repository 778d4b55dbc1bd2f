from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workflows.errors import ApplicationError
from workflows.services.prices import prices_load


class Command(BaseCommand):
    help = "Load the price table from a JSON file (default: the shipped list prices). Prints the row count last."

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", type=Path, default=None)

    def handle(self, *args, **options):
        path = options["file"] or settings.PRICES_FILE
        try:
            count = prices_load(path=path)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Loaded {count} prices from {path}.")
        self.stdout.write(str(count))
