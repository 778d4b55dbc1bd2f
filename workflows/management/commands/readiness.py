from django.core.management.base import BaseCommand, CommandError

from workflows.api.probes import READINESS_CHECKS
from workflows.services.health import readiness_problems


class Command(BaseCommand):
    help = (
        "Run /readyz's checks from the command line, for a container's healthcheck: exits 1 naming each "
        "failing check. With check names, only those count (e.g. `readiness sweeper` for beat's container)."
    )

    def add_arguments(self, parser):
        parser.add_argument("checks", nargs="*", choices=READINESS_CHECKS, metavar="check", help=", ".join(READINESS_CHECKS))

    def handle(self, *args, **options):
        wanted = options["checks"] or READINESS_CHECKS
        problems = {name: problem for name, problem in readiness_problems().items() if name in wanted}
        if problems:
            raise CommandError("Not ready: " + "; ".join(f"{name}: {problem}" for name, problem in sorted(problems.items())))
        self.stdout.write(f"Ready: {', '.join(wanted)}.")
