import hashlib
import secrets
from datetime import timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone

from workflows.definition import check_limits
from workflows.errors import ValidationFailed, problems_as_details
from workflows.models import ApiKey, Team

API_KEY_PREFIX = "bsk_"
# Recording every request's time would make each API call a write; once a minute is enough to audit keys.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_api_key(raw_key: str) -> str:
    # Keys are 256 random bits, so a fast unsalted hash is enough; a password hash would slow every request.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def team_limit_defaults_check(
    *,
    budget_usd: Decimal | str | None = None,
    budget_mode: str | None = None,
    max_iterations: int | None = None,
    timeout_seconds: int | None = None,
) -> dict:
    given = {
        "budget_usd": budget_usd,
        "budget_mode": budget_mode,
        "max_iterations": max_iterations,
        "timeout_seconds": timeout_seconds,
    }
    clean, problems = check_limits(given, path="defaults")
    if problems:
        raise ValidationFailed("The team's budget defaults are invalid.", details=problems_as_details(problems))
    return clean


def team_create(
    *,
    name: str,
    budget_usd: Decimal | str | None = None,
    budget_mode: str | None = None,
    max_iterations: int | None = None,
    timeout_seconds: int | None = None,
) -> Team:
    defaults = team_limit_defaults_check(
        budget_usd=budget_usd, budget_mode=budget_mode, max_iterations=max_iterations, timeout_seconds=timeout_seconds
    )
    if Team.objects.filter(name=name).exists():
        raise ValidationFailed(f"A team named '{name}' already exists.")
    team = Team(
        name=name,
        default_budget_usd=defaults.get("budget_usd"),
        default_budget_mode=defaults.get("budget_mode") or "",
        default_max_iterations=defaults.get("max_iterations"),
        default_timeout_seconds=defaults.get("timeout_seconds"),
    )
    try:
        team.full_clean()
    except DjangoValidationError as exc:
        details = [{"path": field, "message": " ".join(messages)} for field, messages in exc.message_dict.items()]
        raise ValidationFailed("The team is invalid.", details=details) from exc
    team.save()
    return team


def api_key_create(*, team: Team, name: str = "") -> tuple[ApiKey, str]:
    """A new key for the team; the raw key is returned once and only its hash is kept."""
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        team=team, name=name, prefix=raw_key[: len(API_KEY_PREFIX) + 8], key_hash=hash_api_key(raw_key)
    )
    return api_key, raw_key


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    """The active key matching `raw_key`, or None."""
    api_key = (
        ApiKey.objects.select_related("team")
        .filter(key_hash=hash_api_key(raw_key), revoked_at__isnull=True)
        .first()
    )
    if api_key is None:
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key
