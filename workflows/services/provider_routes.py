"""Provider routes: the backend each of conductor's runtime provider names reaches for a team.

A team's own routes win over the operator's defaults (settings.PROVIDER_ROUTES). An upload is
checked against them (services/workflows.py); a run keeps the backends they gave it when it started,
so that changing a route never moves a run that is under way (services/runs.py).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from workflows.definition import backend_of, provider_problem, route_problems
from workflows.errors import ProviderNotRouted, ValidationFailed
from workflows.models import ProviderRoute, Team
from workflows.services.locks import lock_rows


@dataclass(frozen=True)
class ProviderRoutes:
    own: dict[str, str]  # the team's
    defaults: dict[str, str]  # the operator's, for every team
    models: dict[str, str]  # the team's default model of each of its routes that has one

    @property
    def effective(self) -> dict[str, str]:
        """What the team's uploads and new runs use: the team's own routes over the defaults."""
        return {**self.defaults, **self.own}


def provider_routes_get(*, team: Team) -> ProviderRoutes:
    rows = ProviderRoute.objects.filter(team=team).values_list("provider", "backend", "default_model")
    return ProviderRoutes(
        own={name: backend for name, backend, _ in rows},
        defaults=dict(settings.PROVIDER_ROUTES),
        models={name: model for name, _, model in rows if model},
    )


def provider_routes_of(*, team: Team) -> dict[str, str]:
    return provider_routes_get(team=team).effective


def provider_routes_set(*, team: Team, routes: object, default_models: Mapping[str, str] | None = None) -> ProviderRoutes:
    """Replace the team's own routes with `routes`, a map of provider name to backend, and the
    default models of its routes with `default_models`; every problem is reported at once, and
    nothing is saved unless all are valid."""
    default_models = dict(default_models or {})
    details = [{"path": f"routes.{name}" if name else "routes", "message": message} for name, message in route_problems(routes)]
    details += [
        {"path": f"default_models.{name}", "message": "is not a provider the team routes here"}
        for name in default_models
        if not isinstance(routes, Mapping) or name not in routes
    ]
    if details:
        raise ValidationFailed("The provider routes are invalid.", details=details)
    assert isinstance(routes, Mapping)
    with transaction.atomic():
        # Two replacements of one team's routes queue here rather than collide on the unique constraint.
        lock_rows(team_id=team.pk)
        ProviderRoute.objects.filter(team=team).delete()
        ProviderRoute.objects.bulk_create(
            ProviderRoute(team=team, provider=name, backend=backend, default_model=default_models.get(name, ""))
            for name, backend in routes.items()
        )
    return provider_routes_get(team=team)


def run_backends(*, providers: Iterable[str], routes: Mapping[str, str]) -> dict[str, str]:
    """The backend of each provider a run's workflow names; ProviderNotRouted naming every one
    that reaches none (a route removed since the workflow was uploaded)."""
    unrouted = {name: problem for name in sorted(providers) if (problem := provider_problem(name, routes))}
    if unrouted:
        raise ProviderNotRouted(
            "The workflow's providers cannot be reached: " + "; ".join(unrouted.values()) + ".",
            details={"providers": sorted(unrouted)},
        )
    return {name: backend_of(name, routes) for name in providers}
