import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from budgetsvc.private_files import write_private_file
from workflows.models import Team
from workflows.services.teams import api_key_create, hash_api_key, team_create

DEMO_TEAM = "demo"
ADMIN_USERNAME = "admin"


def shown_path(path: Path) -> Path:
    """The path as the reader would type it: relative to the current directory when it is under it
    (`var/demo-api-key` after `make run`), else absolute."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


class Command(BaseCommand):
    help = "Ensure the demo team, its API key and an admin user exist (used by `make run`). Prints the key last."

    def handle(self, *args, **options):
        team = Team.objects.filter(name=DEMO_TEAM).first() or team_create(name=DEMO_TEAM)
        self._ensure_admin()
        self.stdout.write(f"Demo team '{team.name}'. Its API key (also in {shown_path(self._key_file())}):")
        self.stdout.write(self._demo_key(team))

    def _demo_key(self, team: Team) -> str:
        # Only a hash is stored, so the raw demo key is kept in var/ to show it on every start.
        key_file = self._key_file()
        if key_file.is_file():
            raw_key = key_file.read_text().strip()
            if team.api_keys.filter(key_hash=hash_api_key(raw_key), revoked_at__isnull=True).exists():
                return raw_key
        _, raw_key = api_key_create(team=team, name="demo (make run)")
        write_private_file(path=key_file, text=raw_key + "\n")
        return raw_key

    def _ensure_admin(self) -> None:
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser(username=ADMIN_USERNAME, email="", password=password)
        self.stdout.write(
            f"Admin login (shown once): {ADMIN_USERNAME} / {password}  "
            f"-- change it with `manage.py changepassword {ADMIN_USERNAME}`."
        )

    @staticmethod
    def _key_file():
        return settings.VAR_DIR / "demo-api-key"
