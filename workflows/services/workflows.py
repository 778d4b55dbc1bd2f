import json
from collections.abc import Mapping
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Max, OuterRef, Subquery

from workflows.definition import STDIO_SERVERS, DefinitionError, WorkflowDefinition, load_definition
from workflows.errors import DefinitionInvalid, EndpointMismatch, ProviderNotRouted, ValidationFailed, problems_as_details
from workflows.models import Team, Workflow, WorkflowVersion
from workflows.selectors import definition_of
from workflows.services.credentials import check_endpoints, credential_endpoints
from workflows.services.prices import is_priced, table_prices
from workflows.services.provider_routes import provider_routes_get, provider_routes_of, run_backends
from workflows.services.tool_servers import registered_servers_for

MAX_NAME_LENGTH = Workflow._meta.get_field("name").max_length
SCRIPTS_OFF = "script steps run commands on the service's workers, and they are off on this service (SCRIPT_STEPS_ENABLED)"
SCRIPTS_NOT_ALLOWED = (
    "script steps run commands on the service's workers: an operator must allow them for this team "
    "(the team's 'may run scripts' setting, in the admin)"
)


STDIO_OFF = (
    "a stdio MCP server starts its command on the service's workers, and running commands there is off "
    "on this service (SCRIPT_STEPS_ENABLED); use an 'http' or 'sse' server"
)
STDIO_NOT_ALLOWED = (
    "a stdio MCP server starts its command on the service's workers: an operator must allow local "
    "execution for this team (the team's 'may run scripts' setting, in the admin, as for script steps); "
    "or use an 'http' or 'sse' server"
)


def refused_step_kinds(*, team: Team) -> dict[str, str]:
    """The kinds of step the team may not use, and why; and stdio MCP servers (STDIO_SERVERS), which
    run commands on workers as script steps do, under the same setting."""
    if not settings.SCRIPT_STEPS_ENABLED:
        return {"script": SCRIPTS_OFF, STDIO_SERVERS: STDIO_OFF}
    return {} if team.may_run_scripts else {"script": SCRIPTS_NOT_ALLOWED, STDIO_SERVERS: STDIO_NOT_ALLOWED}


def workflows_off_their_endpoint(*, team: Team) -> list[str]:
    """The team's workflows, by name, whose latest version names an endpoint or a wire that its
    credentials and routes no longer fit: a run of one would be refused as it starts
    (`check_endpoints`). What an operator who changes the team's credentials is told."""
    routes = provider_routes_of(team=team)
    newest = WorkflowVersion.objects.filter(workflow=OuterRef("workflow")).order_by("-version").values("version")[:1]
    latest = WorkflowVersion.objects.filter(workflow__team=team, version=Subquery(newest)).select_related("workflow")
    names = []
    for version in latest.order_by("workflow__name"):
        definition = definition_of(version)
        if all(each.endpoint is None and each.wire is None for each in definition.nested()):
            continue
        try:
            check_endpoints(team=team, definition=definition, backends=run_backends(providers=definition.providers(), routes=routes))
        except (EndpointMismatch, ProviderNotRouted):
            names.append(version.workflow.name)
    return names


def latest_definition(name: str, *, team: Team) -> WorkflowDefinition | None:
    """The latest version of the team's workflow `name`, which a `type: workflow` step uploaded now
    runs from then on; None when the team has none."""
    version = WorkflowVersion.objects.filter(workflow__team=team, workflow__name=name).order_by("-version").first()
    return None if version is None else definition_of(version)


def workflow_create(*, team: Team, definition: str | Mapping, name: str | None = None) -> WorkflowVersion:
    """Validate a definition and store it as the next version of the team's workflow of that name."""
    routes = provider_routes_get(team=team)  # one read for the routes and their default models
    try:
        parsed = load_definition(
            definition,
            is_priced=is_priced,
            provider_routes=routes.effective,
            refused_kinds=refused_step_kinds(team=team),
            provider_models=routes.models,
            max_bytes=settings.DEFINITION_MAX_BYTES,
            table_prices=table_prices,
            may_lower_prices=team.may_override_prices,
            max_expanded_bytes=settings.DEFINITION_MAX_EXPANDED_BYTES,
            workflows=partial(latest_definition, team=team),
            registered_servers=registered_servers_for(team=team),
            provider_endpoints=credential_endpoints(team=team),
        )
    except DefinitionError as exc:
        count = len(exc.problems)
        raise DefinitionInvalid(
            f"The workflow definition has {count} problem{'s' if count != 1 else ''}.",
            details=problems_as_details(exc.problems),
        ) from exc
    name = (name or parsed.name).strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValidationFailed(
            f"A workflow name must be 1 to {MAX_NAME_LENGTH} characters.", details=[{"path": "name", "message": "invalid"}]
        )
    if name.isdigit():
        # A run names its workflow by id or by name: digits alone would always be read as an id.
        raise ValidationFailed(
            f"A workflow name cannot be only digits ('{name}'): runs would read it as a workflow id.",
            details=[{"path": "name", "message": "only digits"}],
        )
    source = definition if isinstance(definition, str) else json.dumps(definition, indent=2, default=str)
    with transaction.atomic():
        workflow, _ = Workflow.objects.get_or_create(team=team, name=name)
        # Numbering versions under the workflow's row lock keeps concurrent uploads from colliding.
        Workflow.objects.select_for_update().filter(pk=workflow.pk).first()
        latest = workflow.versions.aggregate(latest=Max("version"))["latest"] or 0
        return WorkflowVersion.objects.create(
            workflow=workflow, version=latest + 1, source=source, definition=parsed.to_dict()
        )
