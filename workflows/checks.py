"""System checks `manage.py check --deploy` runs before a production deployment."""

from django.conf import settings
from django.core.checks import Warning, register


@register("security", deploy=True)
def check_credentials_encryption_keys(app_configs, **kwargs) -> list[Warning]:
    if settings.CREDENTIALS_ENCRYPTION_KEYS:
        return []
    return [
        Warning(
            "CREDENTIALS_ENCRYPTION_KEYS is not set: teams' provider keys are encrypted with a key derived "
            "from DJANGO_SECRET_KEY, so anyone with that secret can read them, and changing it makes them "
            "unreadable.",
            hint="Set CREDENTIALS_ENCRYPTION_KEYS to a Fernet key (docs/providers.md#encryption-at-rest).",
            id="workflows.W001",
        )
    ]
