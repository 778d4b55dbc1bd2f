from django.core.management.base import BaseCommand, CommandError

from workflows.errors import ApplicationError
from workflows.models import BudgetMode, Period
from workflows.services.teams import team_create


class Command(BaseCommand):
    help = "Create a team with optional budget defaults. Prints the team's name last."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--budget-usd", help="Default run budget in USD, e.g. 5 or 0.50.")
        parser.add_argument("--budget-mode", choices=BudgetMode.values)
        parser.add_argument("--max-iterations", type=int)
        parser.add_argument("--timeout-seconds", type=int)
        parser.add_argument("--period-budget-usd", help="A budget for all the team's runs together, per period.")
        parser.add_argument("--period", choices=Period.values, help="The period budget's calendar period (UTC).")
        parser.add_argument("--period-mode", choices=BudgetMode.values)

    def handle(self, *args, **options):
        try:
            team = team_create(
                name=options["name"],
                budget_usd=options["budget_usd"],
                budget_mode=options["budget_mode"],
                max_iterations=options["max_iterations"],
                timeout_seconds=options["timeout_seconds"],
                period_budget_usd=options["period_budget_usd"],
                period=options["period"],
                period_mode=options["period_mode"],
            )
        except ApplicationError as exc:
            raise CommandError(_describe(exc)) from exc
        self.stdout.write(team.name)


def _describe(exc: ApplicationError) -> str:
    problems = "; ".join(f"{d['path']}: {d['message']}" for d in exc.details) if isinstance(exc.details, list) else ""
    return f"{exc.message} {problems}".strip()
