"""`script`: conductor's step that runs a command on a worker, where the operator turned script
steps on (SCRIPT_STEPS_ENABLED) and for teams allowed to run them (`Team.may_run_scripts`); how the
command is confined is services/scripts.py's."""

import json
import re
from collections.abc import Mapping
from decimal import Decimal

from django.conf import settings

from workflows.definition import (
    AgentSpec,
    Problem,
    StepSpec,
    WorkflowDefinition,
    compile_check,
    env_problem,
    output_problems,
    read_output_schema,
)
from workflows.models import Team
from workflows.providers import CompletionResult
from workflows.services.scripts import ScriptFailed, script_run
from workflows.services.renders import render_kept
from workflows.services.steps.kinds.base import NoCallStepKind, PreparedStep, StepAttempt, StepWorkFailed

MAX_TIMEOUT_SECONDS = 3600  # what a definition may ask for; SCRIPT_TIMEOUT_SECONDS caps it on the worker
_INTERPOLATION = re.compile(r"\$\{[^}]*\}")


class ScriptKind(NoCallStepKind):
    """`command` and `args` (templates), `env` (literal values), `stdin` (a template), `timeout`
    (seconds), `output` (a schema, as an agent's). Its output is conductor's: `{stdout, stderr,
    exit_code}`, with the keys of a JSON object printed on stdout laid over them. A non-zero exit
    code does not fail the step: routes read it. It costs nothing and counts as an iteration."""

    name = "script"
    keys = ("command", "args", "env", "stdin", "timeout", "output", "working_dir", "input")

    def read(self, section):
        problems_before = len(section.problems)
        templates = [("command", section.text("command", required=True)), ("stdin", section.text("stdin"))]
        args = section.sequence("args")
        templates += [(f"args[{index}]", arg) for index, arg in enumerate(args)]
        for key, template in templates:
            if template is not None and not isinstance(template, str):
                section.report(key, "must be a template string")
            elif template is not None and (error := compile_check(template)):
                section.report(key, f"template does not compile: {error}")
        env = {}
        for name, value, path in section.entries("env"):
            if problem := env_problem(name, value):
                section.problems.append(Problem(path, problem))
            elif _INTERPOLATION.search(value):
                section.problems.append(
                    Problem(path, "'${...}' would read the worker's environment, which no workflow sees: pass it as an input")
                )
            else:
                env[name] = value
        section.integer("timeout", minimum=1, maximum=MAX_TIMEOUT_SECONDS)
        schema = read_output_schema(section)
        if "working_dir" in section.data:
            section.report("working_dir", "a script runs in a scratch directory of its own, made for each run of it")
        if len(section.problems) > problems_before:
            return None
        return {
            "command": section.data["command"],
            "args": list(args),
            "env": env,
            "stdin": section.data.get("stdin"),
            "timeout": section.data.get("timeout"),
            "output": schema,
        }

    def templates(self, params):
        args = [(f"args[{index}]", arg) for index, arg in enumerate(params["args"])]
        stdin = [("stdin", params["stdin"])] if params["stdin"] is not None else []
        return [("command", params["command"]), *args, *stdin]

    def prepare(
        self,
        *,
        node: AgentSpec | StepSpec,
        context: dict,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        params, where = node.params, f"script '{node.name}'"
        call = {
            "command": render_kept(params["command"], context, where=f"{where} command").strip(),
            "args": [render_kept(arg, context, where=f"{where} args[{n}]") for n, arg in enumerate(params["args"])],
            "env": params["env"],
            "stdin": None if params["stdin"] is None else render_kept(params["stdin"], context, where=f"{where} stdin"),
            "timeout": min(params["timeout"] or settings.SCRIPT_TIMEOUT_SECONDS, settings.SCRIPT_TIMEOUT_SECONDS),
        }
        return PreparedStep(kind=self.name, estimate_usd=Decimal("0"), data={"call": call, "output": params["output"]})

    def run(self, attempt: StepAttempt) -> CompletionResult:
        if not settings.SCRIPT_STEPS_ENABLED:
            raise StepWorkFailed("ScriptError", "Script steps are off on this service.")
        if not Team.objects.filter(pk=attempt.team_id, may_run_scripts=True).exists():
            raise StepWorkFailed("ScriptError", "Script steps are no longer allowed for this team.")
        try:
            ran = script_run(**attempt.prepared.data["call"])
        except ScriptFailed as exc:
            raise StepWorkFailed("ScriptError", str(exc)) from None
        output = {"stdout": ran.stdout, "stderr": ran.stderr, "exit_code": ran.exit_code}
        try:
            printed = json.loads(ran.stdout)
        except ValueError:
            printed = None
        if isinstance(printed, dict):
            output |= printed
        schema = attempt.prepared.data["output"]
        if schema is not None:
            # As conductor: with an output schema, stdout must be a JSON object, checked laid over the rest.
            problems = ["stdout is not a JSON object"] if not isinstance(printed, dict) else output_problems(output, schema)
            if problems:
                raise StepWorkFailed("ScriptOutputError", "The script's output does not match its schema: " + "; ".join(problems[:10]))
        return CompletionResult(input_tokens=0, output_tokens=0, output=output)
