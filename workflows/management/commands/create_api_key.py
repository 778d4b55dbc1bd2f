from django.core.management.base import BaseCommand, CommandError

from workflows.models import Team
from workflows.services.teams import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a team. Prints the key last; it is shown only this once."

    def add_arguments(self, parser):
        parser.add_argument("--team", required=True, help="The team's name.")
        parser.add_argument("--name", default="", help="A label for the key.")

    def handle(self, *args, **options):
        team = Team.objects.filter(name=options["team"]).first()
        if team is None:
            raise CommandError(f"No team named '{options['team']}'.")
        _, raw_key = api_key_create(team=team, name=options["name"])
        self.stdout.write(raw_key)
