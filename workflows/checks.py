"""System checks `manage.py check --deploy` runs before a production deployment."""

from django.conf import settings
from django.core.checks import Warning, register


@register("security", deploy=True)
def check_credentials_encryption_keys(app_configs, **kwargs) -> list[Warning]:
    if settings.CREDENTIALS_ENCRYPTION_KEYS:
        return []
    if settings.CREDENTIALS_INSTALL_KEY:
        kept = (
            f"a key generated for this install and kept in {settings.VAR_DIR / 'credentials-key'}, "
            "so anyone who can read that directory can read them, and a machine without that file cannot."
        )
    else:
        kept = (
            "a key derived from DJANGO_SECRET_KEY, so anyone with that secret can read them, and changing it "
            "without keeping the old one in DJANGO_SECRET_KEY_FALLBACKS makes them unreadable."
        )
    return [
        Warning(
            f"CREDENTIALS_ENCRYPTION_KEYS is not set: teams' provider keys are encrypted with {kept}",
            hint="Set CREDENTIALS_ENCRYPTION_KEYS to a Fernet key (docs/providers.md#encryption-at-rest).",
            id="workflows.W001",
        )
    ]


@register("security", deploy=True)
def check_secret_key_is_set(app_configs, **kwargs) -> list[Warning]:
    if settings.SECRET_KEY_FILE is None:
        return []
    return [
        Warning(
            f"DJANGO_SECRET_KEY is not set: this machine signs sessions with the key generated in "
            f"{settings.SECRET_KEY_FILE}, which no other machine has.",
            hint="Set DJANGO_SECRET_KEY, the same on every machine (docs/operations.md#production-settings).",
            id="workflows.W002",
        )
    ]


@register("security", deploy=True)
def check_script_steps(app_configs, **kwargs) -> list[Warning]:
    if not settings.SCRIPT_STEPS_ENABLED:
        return []
    return [
        Warning(
            "SCRIPT_STEPS_ENABLED is on: a team allowed to run script steps runs commands as the step workers' "
            "user, which can read what that user can, the workers' environment (DATABASE_URL, DJANGO_SECRET_KEY, "
            "CREDENTIALS_ENCRYPTION_KEYS) included.",
            hint="Allow it only to teams you would give those credentials (docs/operations.md#script-steps).",
            id="workflows.W003",
        )
    ]
