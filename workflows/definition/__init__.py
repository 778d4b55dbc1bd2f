"""Workflow definitions: parsing, validation, templates, routing, tokens, costs and limits.

Pure Python: nothing here imports Django.
"""

from ._agents import read_output_schema
from ._section import Section
from ._values import unstorable_json
from .bounds import MAX_CALL_TOKENS
from .context_modes import CONTEXT_MODES, context_for_agent
from .errors import DefinitionError, NoRouteMatched, Problem, TemplateFailure
from .inputs import check_inputs
from .limits import LIMIT_FIELDS, SYSTEM_DEFAULTS, ResolvedLimits, check_limits, resolve_limits
from .model import (
    FAILURE_MODES,
    AgentSpec,
    ForEachSpec,
    GroupSpec,
    InputSpec,
    LimitsSpec,
    MockSpec,
    ParallelSpec,
    RouteSpec,
    StepSpec,
    WorkflowDefinition,
    output_cap,
)
from .outputs import json_schema, output_problems
from .parse import MAX_DEFINITION_BYTES, load_definition
from .references import GroupNames, register_group_names
from .pricing import (
    FREELY_PRICED_PROVIDERS,
    MONEY_PLACES,
    USAGE_FIELDS,
    UnitPrices,
    cost_usd,
    estimate_usd,
    is_count,
    to_exact_money,
    to_money,
    usage_problem,
    worst_case_counts,
)
from .providers import (
    BACKENDS,
    DEFAULT_PROVIDER,
    ROUTABLE,
    backend_of,
    model_for_backend,
    provider_problem,
    route_problems,
)
from .step_kinds import COMMON_KEYS, StepReader, register_step_reader, unregister_step_reader
from .run_output import output_value, parsed_text
from .references import always_run_before, ran_just_before
from .reasoning import CONTEXT_TIERS, REASONING_EFFORTS, is_template, rendered_choice, thinking_budget
from .routes import END, Complete, Fail, GoTo, Move, next_agent, next_move
from .templates import (
    compile_check,
    configure_render_budget,
    evaluate,
    expression_check,
    render,
    render_budget,
    resolve_reference,
    template_context,
)
from .tokens import count_tokens, fake_token_count

__all__ = [
    "BACKENDS",
    "CONTEXT_MODES",
    "CONTEXT_TIERS",
    "DEFAULT_PROVIDER",
    "END",
    "FAILURE_MODES",
    "FREELY_PRICED_PROVIDERS",
    "LIMIT_FIELDS",
    "MAX_CALL_TOKENS",
    "MAX_DEFINITION_BYTES",
    "MONEY_PLACES",
    "REASONING_EFFORTS",
    "ROUTABLE",
    "SYSTEM_DEFAULTS",
    "USAGE_FIELDS",
    "COMMON_KEYS",
    "AgentSpec",
    "Complete",
    "DefinitionError",
    "Fail",
    "ForEachSpec",
    "GroupNames",
    "GoTo",
    "GroupSpec",
    "InputSpec",
    "LimitsSpec",
    "MockSpec",
    "Move",
    "NoRouteMatched",
    "ParallelSpec",
    "Problem",
    "ResolvedLimits",
    "RouteSpec",
    "Section",
    "StepReader",
    "StepSpec",
    "TemplateFailure",
    "UnitPrices",
    "WorkflowDefinition",
    "always_run_before",
    "backend_of",
    "check_inputs",
    "check_limits",
    "compile_check",
    "configure_render_budget",
    "context_for_agent",
    "cost_usd",
    "count_tokens",
    "estimate_usd",
    "is_count",
    "is_template",
    "evaluate",
    "expression_check",
    "fake_token_count",
    "json_schema",
    "load_definition",
    "next_agent",
    "next_move",
    "model_for_backend",
    "output_cap",
    "output_problems",
    "provider_problem",
    "ran_just_before",
    "parsed_text",
    "render",
    "render_budget",
    "rendered_choice",
    "register_group_names",
    "register_step_reader",
    "output_value",
    "read_output_schema",
    "resolve_limits",
    "resolve_reference",
    "route_problems",
    "template_context",
    "thinking_budget",
    "to_exact_money",
    "to_money",
    "unregister_step_reader",
    "unstorable_json",
    "usage_problem",
    "worst_case_counts",
]
