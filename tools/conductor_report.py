"""How many of a folder's conductor workflows upload, and why each of the others is refused.

    .venv/bin/python tools/conductor_report.py FOLDER [--routes copilot=openai,...]
        [--base-urls openai=http://localhost:11434/v1,...] [--json]

Every `*.yaml` and `*.yml` file under FOLDER (recursively) that has a top-level `workflow:` key is
uploaded exactly as `POST /api/v1/workflows` uploads it: through `workflow_create`, for a team whose
provider routes are given by `--routes`, against the price table the service ships. `--base-urls`
gives the team provider credentials with those base URLs (BACKEND=URL, `openai` or `anthropic`), as
an operator sets them in the admin: a workflow that names its endpoint (conductor's
`runtime.provider.base_url`, as in `copilot-local-llm.yaml`) uploads only where the credentials of
the backend its calls reach point at it. Without it the team has no credentials. Files without a
`workflow:` key are listed as skipped. The report lists the files that upload, every problem of each
refused file (its path and message), then how many files each kind of reason refused.

Why Django: an upload's checks depend on the database (the price table decides which models are
priced and below which price a workflow may not go; the team's routes and settings are rows). To
check exactly what an upload checks, the script calls the upload's own service against an in-memory
SQLite database, migrated and loaded with the shipped prices (`loadprices`) at start. Nothing is
written anywhere else: the database lives in memory, the settings' private directory is a temporary
one, no broker is contacted, and nothing reaches the network.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import secrets
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# What the goal assumes: a team that routes each of conductor's runtime names to a backend.
DEFAULT_ROUTES = "copilot=openai,claude-agent-sdk=anthropic,hermes=openai"
# The team's settings an upload depends on, each one flag: (flag, Team field, help).
TEAM_FLAGS = (
    ("--may-lower-prices", "may_override_prices", "the team may price a model below the price table"),
    ("--scripts", "may_run_scripts", "an operator allowed the team to run script steps"),
)


@dataclass
class FileResult:
    path: str
    status: str  # "uploads", "refused" or "skipped"
    problems: list[dict[str, str]] = field(default_factory=list)  # {"path", "message", "kind"}
    note: str = ""  # why a file was skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument(
        "--routes",
        default=DEFAULT_ROUTES,
        help=f"the team's provider routes, NAME=BACKEND,... ('' for none; default: {DEFAULT_ROUTES})",
    )
    parser.add_argument(
        "--base-urls",
        default="",
        help="the base URLs of the team's provider credentials, BACKEND=URL,... (no credentials by default)",
    )
    parser.add_argument(
        "--default-models",
        default="",
        help="the default model of some of those routes, NAME=MODEL,... (none by default)",
    )
    for flag, _, help_text in TEAM_FLAGS:
        parser.add_argument(flag, action="store_true", help=help_text)
    parser.add_argument("--prices", type=Path, default=None, help="a prices file (default: the shipped one)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    try:
        routes = _pairs(args.routes)
        default_models = _pairs(args.default_models)
        base_urls = _pairs(args.base_urls)
    except ValueError as exc:
        parser.error(str(exc))
    with tempfile.TemporaryDirectory(prefix="conductor-report-") as var_dir:
        _set_up_django(var_dir)
        from workflows.definition import BACKENDS

        if unknown := sorted(set(base_urls) - set(BACKENDS)):
            parser.error(f"--base-urls: {', '.join(unknown)} is not a backend ({', '.join(BACKENDS)})")
        results = check_folder(
            args.folder,
            routes=routes,
            default_models=default_models,
            base_urls=base_urls,
            team_settings={name: getattr(args, flag[2:].replace("-", "_")) for flag, name, _ in TEAM_FLAGS},
            prices=args.prices,
        )
    print(json.dumps(_as_json(results), indent=2) if args.json else _as_text(results, folder=args.folder))
    return 0


def _pairs(text: str) -> dict[str, str]:
    routes = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, equals, backend = item.partition("=")
        if not equals or not name.strip() or not backend.strip():
            raise ValueError(f"{item!r} is not NAME=VALUE")
        routes[name.strip()] = backend.strip()
    return routes


def _set_up_django(var_dir: str) -> None:
    """The service's own settings, on an in-memory database, with nothing of the machine's
    environment that could change what an upload checks (its operator routes) or where it writes."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "budgetsvc.settings"
    os.environ["BUDGETSVC_VAR_DIR"] = var_dir
    os.environ["DATABASE_URL"] = "sqlite://:memory:"
    os.environ["CELERY_BROKER_URL"] = "filesystem://"
    os.environ["PROVIDER_ROUTES"] = ""  # the team's routes are the flag's, not the operator's
    os.environ["SCRIPT_STEPS_ENABLED"] = "true"  # whether the team may run them is --scripts
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def check_folder(
    folder: Path,
    *,
    routes: dict[str, str],
    team_settings: dict[str, bool],
    prices: Path | None = None,
    default_models: dict[str, str] | None = None,
    base_urls: dict[str, str] | None = None,
) -> list[FileResult]:
    """Upload every conductor workflow under `folder` for a fresh team, with credentials of the
    `base_urls` given by backend; Django must be set up."""
    from django.core.management import call_command
    from django.db import transaction

    from workflows.errors import ApplicationError
    from workflows.models import ProviderCredential, Team
    from workflows.services.credentials import encrypt
    from workflows.services.provider_routes import provider_routes_set
    from workflows.services.workflows import workflow_create

    call_command("migrate", verbosity=0, interactive=False)
    call_command("loadprices", *([prices] if prices else []), stdout=io.StringIO())  # as `make run` does
    team = Team.objects.create(name="conductor-report", **team_settings)
    provider_routes_set(team=team, routes=routes, default_models=default_models)
    for backend, base_url in (base_urls or {}).items():
        # The rows an operator's save in the admin writes, without its check that the URL's host may
        # be reached: that is looked up in DNS, and the report reaches no network.
        ProviderCredential.objects.create(
            team=team, provider=backend, api_key_encrypted=encrypt("conductor-report"), base_url=base_url
        )

    results = []
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    for file in files:
        shown = file.relative_to(folder).as_posix()
        text, note = _read(file)
        if note:
            results.append(FileResult(shown, "skipped", note=note))
            continue
        try:
            with transaction.atomic():
                _upload(team, file, text, workflow_create)
                transaction.set_rollback(True)  # each file is checked alone
        except ApplicationError as exc:
            problems = [
                {"path": d["path"], "message": d["message"], "kind": reason_kind(d["path"], d["message"])} for d in _details(exc)
            ]
            results.append(FileResult(shown, "refused", problems))
        else:
            results.append(FileResult(shown, "uploads"))
    return results


def _upload(team, file: Path, text: str, workflow_create, *, name: str | None = None, depth: int = 0) -> None:
    """Upload `file` after the files its `type: workflow` steps name, each under the name the
    service gives a reference (its file name without .yaml), as a conductor user would. A refused
    sub-workflow refuses its caller: its problems are reported at the caller's step, beside the
    caller's own."""
    from workflows.definition.subworkflows import MAX_DEPTH, workflow_name
    from workflows.errors import ApplicationError, DefinitionInvalid

    problems, refused_at = [], set()
    for at, reference in _references(text):
        child = (file.parent / reference).resolve()
        if depth >= MAX_DEPTH or not child.is_file():
            continue  # the upload says the team has no such workflow
        try:
            _upload(team, child, child.read_text(encoding="utf-8"), workflow_create, name=workflow_name(reference), depth=depth + 1)
        except ApplicationError as exc:
            problems += [{"path": f"{at}({reference}).{d['path']}", "message": d["message"]} for d in _details(exc)]
            refused_at.add(f"{at}.workflow")
    try:
        workflow_create(team=team, definition=text, name=name)
    except ApplicationError as exc:
        # That a refused sub-workflow is missing is said already, by its own problems.
        problems += [d for d in _details(exc) if d["path"] not in refused_at]
    if problems:
        raise DefinitionInvalid(f"The workflow definition has {len(problems)} problems.", details=problems)


def _details(exc) -> list[dict]:
    return exc.details if isinstance(exc.details, list) else [{"path": "definition", "message": exc.message}]


def _references(text: str) -> list[tuple[str, str]]:
    """(path, reference) of each `type: workflow` step of a definition that names another file."""
    try:
        data = yaml.load(text, Loader=_LenientLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError:
        return []
    found = []
    for key in ("agents", "for_each"):
        entries = data.get(key) if isinstance(data, dict) else None
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            in_group = isinstance(entry, dict) and key == "for_each"
            agent = entry.get("agent", entry) if in_group else entry
            if isinstance(agent, dict) and agent.get("type") == "workflow" and isinstance(agent.get("workflow"), str):
                found.append((f"{key}[{index}].agent" if in_group else f"{key}[{index}]", agent["workflow"]))
    return found


def _read(file: Path) -> tuple[str, str]:
    """The file's text, or why it is not a conductor workflow."""
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return "", "not UTF-8 text"
    if not _has_workflow_key(text):
        return "", "no top-level 'workflow:' key"
    return text, ""


class _LenientLoader(yaml.SafeLoader):
    """Reads any tag (conductor's `!file`) as plain data: only the top-level keys matter here."""


_LenientLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _has_workflow_key(text: str) -> bool:
    try:
        data = yaml.load(text, Loader=_LenientLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError:
        # Not YAML at all: a workflow only if it says so, so that its upload reports why.
        return re.search(r"^workflow\s*:", text, re.MULTILINE) is not None
    return isinstance(data, dict) and "workflow" in data


# How problems are counted: one kind per reason, whatever file or path it is found at.
_KINDS = (
    (re.compile(r"agent type '([^']+)' is not supported"), "step type '{0}'"),
    (re.compile(r"^script steps run commands"), "script steps not allowed for the team"),
    (re.compile(r"^a stdio MCP server starts its command"), "stdio MCP servers not allowed for the team"),
    (re.compile(r"^names tools the workflow's top-level 'tools' does not list"), "tools the top level does not list"),
    (re.compile(r"but the workflow has no MCP server"), "tools with no MCP server"),
    (re.compile(r"is not routed to a backend"), "unrouted provider"),
    (re.compile(r"^provider '([^']+)' is not supported"), "provider '{0}'"),
    (re.compile(r"is not where the team's calls go"), "endpoint the team's credentials do not point at"),
    (re.compile(r"^unknown provider '([^']+)'"), "unknown provider '{0}'"),
    (re.compile(r"^unknown key '([^']+)'"), "unknown key '{0}'"),
    (re.compile(r"\benvironment variable\b"), "${{VAR}} interpolation"),
    (re.compile(r"^'!file' includes"), "!file include"),
    (re.compile(r"^'([^']+)' (?:is|are) not supported"), "{0}"),
    (re.compile(r"has no price"), "unpriced model"),
)


def reason_kind(path: str, message: str) -> str:
    """What a problem is counted as: a step type, an unrouted provider, the name of a key that is
    refused; otherwise the last key of its path and its message."""
    if re.search(r"routes\[\d+\]\.output$", path):
        return "route output"
    for pattern, kind in _KINDS:
        if match := pattern.search(message):
            return kind.format(*match.groups())
    key = re.sub(r"\[\d+\]", "", path).rsplit(".", 1)[-1]
    return f"{key}: {message}"


def _by_kind(results: list[FileResult]) -> list[tuple[str, int, int]]:
    """(kind, files refused for it, problems of it), the most files first."""
    files: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    for result in results:
        kinds = [problem["kind"] for problem in result.problems]
        problems.update(kinds)
        files.update(set(kinds))
    return sorted(((kind, files[kind], problems[kind]) for kind in files), key=lambda row: (-row[1], -row[2], row[0]))


def _as_json(results: list[FileResult]) -> dict:
    workflows = [r for r in results if r.status != "skipped"]
    return {
        "files": len(results),
        "workflows": len(workflows),
        "uploads": [r.path for r in results if r.status == "uploads"],
        "refused": {r.path: r.problems for r in results if r.status == "refused"},
        "skipped": {r.path: r.note for r in results if r.status == "skipped"},
        "by_kind": [{"kind": kind, "files": files, "problems": count} for kind, files, count in _by_kind(results)],
    }


def _as_text(results: list[FileResult], *, folder: Path) -> str:
    report = _as_json(results)
    lines = [
        f"{folder}: {report['files']} files, {report['workflows']} conductor workflows, {len(report['skipped'])} skipped",
        f"{len(report['uploads'])} of {report['workflows']} upload; {len(report['refused'])} are refused.",
        "",
        "Upload:",
        *(f"  {path}" for path in report["uploads"]),
        "",
        "Refused:",
    ]
    for path, problems in report["refused"].items():
        lines.append(f"  {path} ({len(problems)} problem{'s' if len(problems) != 1 else ''})")
        lines.extend(f"    {problem['path']}: {problem['message']}" for problem in problems)
    if report["skipped"]:
        lines += ["", "Skipped (not conductor workflows):", *(f"  {p}: {why}" for p, why in report["skipped"].items())]
    lines += ["", "Refusals by reason (files refused for it, problems):"]
    lines.extend(f"  {files:3}  {count:3}  {kind}" for kind, files, count in _by_kind(results))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
