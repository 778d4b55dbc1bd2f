from django.core.management.base import BaseCommand, CommandError

from workflows.services.credentials import CredentialsUnreadable, credentials_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every team's stored provider keys and registered MCP servers' headers with the first of CREDENTIALS_ENCRYPTION_KEYS, "
        "after which the older keys can be removed from it. Prints how many were re-encrypted, last."
    )

    def handle(self, *args, **options):
        try:
            rotated = credentials_rotate()
        except CredentialsUnreadable as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(str(rotated))
