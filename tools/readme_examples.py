"""Regenerate README.md's example outputs and docs/images/ from a real run of the service.

    .venv/bin/python tools/readme_examples.py [--no-screenshots]      (or `make readme-examples`)

It starts the service as `make run` does (migrate, collectstatic, loadprices, bootstrap_demo, then
`manage.py serve`), on the embedded defaults (SQLite, the filesystem broker) in a temporary VAR_DIR
and on a free port, so nothing of a developer's own `var/` is read or changed. It then runs each
step of README.md's graduation path: the commands shown in the README are the ones run, by bash,
with `KEY` and `API` set, from the repository's root; the CLI's (`budgetsvc ...`) are run as
`python -m budgetsvc_client ...` with BUDGETSVC_URL and BUDGETSVC_API_KEY set, once the curl path is
done (so their runs come after the curl runs). Without budgetsvc_client/cli the CLI parts are left out,
and the script says so.

Each step's block in README.md, between `<!-- example: NAME -->` and `<!-- /example -->`, is
rewritten with its commands and their real output. Ids, amounts, timestamps and keys are whatever
the run made (the demo key belongs to a throwaway service). The one thing rewritten is the free
port, shown as the default 8000, so that the outputs agree with the README's `API=` line.

How outputs are trimmed, so that they stay readable: a step names the fields it shows of each
object (`Show`); the others are left out and an object that lost any ends with `...`. Fields keep
the order the API sends them in, values are printed as the API sends them (compact JSON), and a
line longer than WIDTH characters breaks between fields, a list of objects one object a line.

Then, logged in to the admin as the superuser bootstrap_demo created (with headless Chromium, the
driver in tests/admin/chromium.py), it saves docs/images/spend.png (the Spend page) and
docs/images/run.png (the enforce run that was resumed), 1400 pixels wide.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
IMAGES = REPO / "docs" / "images"
CLI_MODULE = REPO / "budgetsvc_client" / "cli" / "__init__.py"
WIDTH = 110
SHOWN_PORT = 8000

# A step's fields to show: a name alone shows the field whole, a name with a Show shows those of its
# fields; a function chooses the Show by the object (an event by its type).
Show = dict[str, "Show | None"] | Callable[[dict], "Show | None"] | None


def fields(*names: str, **nested: Show) -> dict:
    return {**dict.fromkeys(names), **nested}


# --- What the README shows --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A shell command as the README shows it. Before it runs, `wait_for` (if any) names a run and the
    status it must reach; the output shown is the last command's of its step."""

    shell: str
    wait_for: tuple[int, str] | None = None


@dataclass(frozen=True)
class Step:
    name: str
    commands: tuple[Command, ...] = ()
    show: Show = None
    # A JSON output is checked against these top-level fields: the ids the commands name are right.
    expect: dict = field(default_factory=dict)
    cli: tuple[Command, ...] = ()
    # Picks what to show of the output: the one event of a list, say.
    pick: Callable[[object], object] | None = None

    def shown_commands(self) -> list[str]:
        return [command.shell for command in self.commands]

    def shown_cli(self) -> list[str]:
        return [command.shell for command in self.cli]


AUTH = '-H "Authorization: Bearer $KEY"'
JSON = "-H 'Content-Type: application/json'"
EXAMPLE = "examples/research-pipeline.yaml"
LIMITS = fields("budget_usd", "budget_mode")
RUN_STARTED = fields("id", "status", "limits", "limit_sources", "spent_usd", "reserved_usd", "current_agent")
EVENT_PAYLOADS: dict[str, Show] = {
    "run_started": fields(limits=LIMITS),
    "agent_completed": fields("agent", "step", "cost_usd", "spent_usd"),
}


def event(item: dict) -> Show:
    return fields("id", "type", "actor", payload=EVENT_PAYLOADS.get(item.get("type")))


STEPS: tuple[Step, ...] = (
    Step(name="make-run"),
    Step(
        name="upload",
        commands=(Command(f"curl {AUTH} -H 'Content-Type: application/yaml' \\\n  --data-binary @{EXAMPLE} $API/workflows"),),
        show=fields("id", "name", "version", "created_at"),
        expect={"id": 1},
    ),
    Step(
        name="no-budget",
        commands=(Command(f"curl {AUTH} {JSON} \\\n  -d '{{\"workflow\": \"research-pipeline\", \"inputs\": {{\"topic\": \"tides\"}}}}' $API/runs"),),
        show=RUN_STARTED,
        expect={"id": 1},
        cli=(Command(f"budgetsvc run {EXAMPLE} --input topic=tides"),),
    ),
    Step(
        name="no-budget-done",
        commands=(Command(f"curl {AUTH} $API/runs/1", wait_for=(1, "completed")),),
        show=fields("id", "status", "spent_usd", "reserved_usd", "iterations", "output", "error"),
    ),
    Step(
        name="audit",
        commands=(
            Command(
                f"curl {AUTH} {JSON} \\\n  -d '{{\"workflow\": \"research-pipeline\", \"inputs\": {{\"topic\": \"tides\"}},\n"
                f"       \"limits\": {{\"budget_usd\": \"0.50\", \"budget_mode\": \"audit\"}}}}' $API/runs"
            ),
            Command(f"curl {AUTH} $API/runs/2/events", wait_for=(2, "completed")),
        ),
        show=fields("next", "previous", results=event),
        cli=(Command(f"budgetsvc run {EXAMPLE} --input topic=tides --budget 0.50 --mode audit"),),
    ),
    Step(
        name="enforce",
        commands=(
            Command(
                f"curl {AUTH} {JSON} \\\n  -d '{{\"workflow\": \"research-pipeline\", \"inputs\": {{\"topic\": \"tides\"}},\n"
                f"       \"limits\": {{\"budget_usd\": 0.5, \"budget_mode\": \"enforce\"}}}}' $API/runs"
            ),
            Command(f"curl {AUTH} $API/runs/3", wait_for=(3, "budget_exceeded")),
        ),
        show=fields("id", "status", "spent_usd", "reserved_usd", "current_agent", "iterations", "error"),
        expect={"id": 3},
        cli=(Command(f"budgetsvc run {EXAMPLE} --input topic=tides --budget 0.50 --mode enforce"),),
    ),
    Step(
        name="resume-refused",
        commands=(Command(f"curl {AUTH} {JSON} \\\n  -d '{{\"reason\": \"try again\"}}' $API/runs/3/resume"),),
        show=fields(error=fields("type", "message", details=fields("status", "current_agent", "scope", "projected_usd", "spent_usd"))),
        cli=(Command('budgetsvc resume 6 --reason "try again"', wait_for=(6, "budget_exceeded")),),
    ),
    Step(
        name="resume",
        commands=(
            Command(f"curl {AUTH} {JSON} \\\n  -d '{{\"budget_usd\": \"1.0\", \"reason\": \"approved by finance\"}}' $API/runs/3/resume"),
        ),
        show=fields("id", "status", "spent_usd", "current_agent", limits=LIMITS, limit_sources=fields("budget_usd", "budget_mode")),
        expect={"id": 3},
        cli=(Command('budgetsvc resume 6 --budget 1.00 --reason "approved by finance" --follow'),),
    ),
    Step(
        name="ledger",
        commands=(Command(f"curl {AUTH} $API/runs/3/ledger", wait_for=(3, "completed")),),
        show=fields(
            "next",
            "previous",
            results=fields(
                "id", "step", "attempt", "agent", "model", "input_tokens", "output_tokens", "input_per_mtok",
                "output_per_mtok", "price_source", "cost_usd",
            ),
        ),
        cli=(Command("budgetsvc runs"), Command("budgetsvc spend --group-by model --since 7d")),
    ),
    Step(
        name="resumed-event",
        commands=(Command(f"curl -s {AUTH} $API/runs/3/events | jq -c '.results[] | select(.type == \"run_resumed\")'"),),
        show=fields(
            "type",
            "actor",
            payload=fields(
                "by", "at", "reason", "from_status", "spent_usd", "next_agent",
                old_limits=fields("budget_usd"), new_limits=fields("budget_usd"),
            ),
        ),
    ),
)

# --- Trimming and layout ---------------------------------------------------------------------------------


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def layout(value, show: Show, indent: int = 0, column: int | None = None) -> str:
    """`value` as compact JSON with only the fields `show` names, starting at `column`, broken into
    lines of WIDTH at most where it can be: between an object's fields (the next line indented one
    more than the object's own), and a list of objects one a line."""
    column = indent if column is None else column
    if not isinstance(value, dict | list):
        return compact(value)
    if isinstance(value, list):
        items = [layout(item, show, indent + 2) for item in value]
        inline = "[" + ",".join(items) + "]"
        if column + len(inline) <= WIDTH and "\n" not in inline:
            return inline
        return "[\n" + ",\n".join(" " * (indent + 2) + item for item in items) + "]"
    if callable(show):
        show = show(value)
    if show is None:
        show = dict.fromkeys(value)  # the whole object, which may still break between its fields
    members = [(key, item) for key, item in value.items() if key in show]
    elided = len(members) < len(value)
    text, at = "{", column + 1
    for index, (key, item) in enumerate(members):
        ending = "," if index < len(members) - 1 or elided else ""

        def piece(start: int) -> str:
            prefix = compact(key) + ":"
            return prefix + layout(item, show[key], indent + 1, start + len(prefix)) + ending

        text_piece = piece(at)
        if at + len(text_piece.split("\n", 1)[0]) > WIDTH and not text.endswith(("{", "\n")):
            text += "\n" + " " * (indent + 1)
            at = indent + 1
            text_piece = piece(at)
        text += text_piece
        at = len(text_piece.rsplit("\n", 1)[-1]) if "\n" in text_piece else at + len(text_piece)
    if elided:
        text += " ..." if at + 5 <= WIDTH or not members else "\n" + " " * (indent + 1) + "..."
    return text + "}"


# --- The README's blocks ----------------------------------------------------------------------------------

BLOCK = re.compile(r"<!-- example: (?P<name>[a-z-]+) -->\n(?P<body>.*?)<!-- /example -->", re.S)


def blocks(text: str) -> dict[str, str]:
    """The README's example blocks by name; refuses a malformed or repeated marker."""
    found: dict[str, str] = {}
    for match in BLOCK.finditer(text):
        if "<!-- example:" in match["body"]:
            raise ValueError(f"the example block '{match['name']}' is not closed before the next one opens")
        if match["name"] in found:
            raise ValueError(f"two example blocks are named '{match['name']}'")
        found[match["name"]] = match["body"]
    if len(found) != text.count("<!-- example:") or len(found) != text.count("<!-- /example -->"):
        raise ValueError("an example marker has no partner")
    return found


def shown_commands(body: str) -> tuple[list[str], list[str]]:
    """The curl commands and the CLI commands a block shows: its ```sh blocks before and after
    CLI_LABEL."""
    curl_part, _, cli_part = body.partition(CLI_LABEL)
    sh = re.compile(r"```sh\n(.*?)\n```", re.S)
    return sh.findall(curl_part), sh.findall(cli_part)


CLI_LABEL = "With the CLI:"


def render_block(step: Step, output: str, cli: list[tuple[str, str]]) -> str:
    parts = ["```sh\n" + "\n".join(step.shown_commands()) + "\n```\n"] if step.commands else []
    parts.append(f"```{'json' if step.commands else ''}\n{output}\n```\n")
    if cli:
        parts.append(f"\n{CLI_LABEL}\n\n")
        for command, printed in cli:
            parts.append(f"```sh\n{command}\n```\n")
            if printed:
                parts.append(f"```\n{printed}\n```\n")
    return "".join(parts)


def rewrite(text: str, rendered: dict[str, str]) -> str:
    missing = set(rendered) - set(blocks(text))
    if missing:
        raise SystemExit(f"README.md has no example block for {sorted(missing)}; add the markers first")
    return BLOCK.sub(lambda m: f"<!-- example: {m['name']} -->\n{rendered.get(m['name'], m['body'])}<!-- /example -->", text)


# --- The service ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Service:
    """The service as `make run` starts it, on the embedded defaults, in `root`/var."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Only what a fresh shell has: no DATABASE_URL, broker or secret of the caller's leaks in.
        self.env = {
            **{name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TZ") if name in os.environ},
            "DJANGO_SETTINGS_MODULE": "budgetsvc.settings",
            "BUDGETSVC_VAR_DIR": str(root / "var"),
            "DJANGO_STATIC_ROOT": str(root / "static"),
            "PYTHONPATH": str(REPO),
            "PORT": str(self.port),
            # serve's start-up line reaches its log while it runs, not when it exits.
            "PYTHONUNBUFFERED": "1",
        }
        self.process: subprocess.Popen | None = None
        self.log_path = root / "serve.log"
        self.started_output = ""

    def manage(self, *args: str, cwd: Path = REPO) -> str:
        done = subprocess.run(
            [sys.executable, str(REPO / "manage.py"), *args], cwd=cwd, env=self.env, capture_output=True, text=True
        )
        if done.returncode:
            raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        self.manage("migrate", "--noinput")
        self.manage("collectstatic", "--noinput", "--verbosity", "0")
        self.manage("loadprices")
        # From the directory that holds var/, as `make run` is started from the one that holds its var/.
        self.started_output = self.manage("bootstrap_demo", cwd=self.root)
        self.key = (self.root / "var" / "demo-api-key").read_text().strip()
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(REPO / "manage.py"), "serve"],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait(lambda: self.answers(), timeout=120, what="the service to answer")
        self.started_output += next(
            line for line in self.log_path.read_text().splitlines() if line.startswith("Starting the web server")
        ) + "\n"

    def answers(self) -> bool:
        if self.process.poll() is not None:
            raise SystemExit(f"manage.py serve exited:\n{self.log_path.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{self.url}/readyz", timeout=2)
        except urllib.error.HTTPError:
            return False
        except OSError:
            return False
        return True

    def run_status(self, run_id: int) -> str | None:
        request = urllib.request.Request(f"{self.url}/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {self.key}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())["status"]
        except urllib.error.HTTPError:
            return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def shown(self, text: str) -> str:
        return text.replace(f"127.0.0.1:{self.port}", f"127.0.0.1:{SHOWN_PORT}")


def wait(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"Timed out waiting for {what}.")
        time.sleep(0.25)


def wait_for_status(service: Service, command: Command) -> None:
    if command.wait_for is not None:
        run_id, status = command.wait_for
        wait(lambda: service.run_status(run_id) == status, timeout=120, what=f"run {run_id} to be {status}")


def run_curl(service: Service, step: Step) -> str:
    output = ""
    for command in step.commands:
        wait_for_status(service, command)
        done = subprocess.run(
            ["bash", "-c", command.shell], cwd=REPO, capture_output=True, text=True,
            env={**service.env, "KEY": service.key, "API": f"{service.url}/api/v1"},
        )
        if done.returncode:
            raise SystemExit(f"{step.name}: `{command.shell}` failed:\n{done.stderr}")
        output = done.stdout
    value = json.loads(output)
    for name, expected in step.expect.items():
        if value.get(name) != expected:
            raise SystemExit(f"{step.name}: expected {name} {expected!r}, the service answered {value.get(name)!r}")
    return service.shown(layout(value, step.show))


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_cli(service: Service, step: Step) -> list[tuple[str, str]]:
    shown = []
    for command in step.cli:
        wait_for_status(service, command)
        args = command.shell.split(" ", 1)[1]
        done = subprocess.run(
            ["bash", "-c", f"{sys.executable} -m budgetsvc_client {args}"], cwd=REPO, capture_output=True, text=True,
            env={**service.env, "BUDGETSVC_URL": service.url, "BUDGETSVC_API_KEY": service.key, "COLUMNS": str(WIDTH)},
        )
        printed = ANSI.sub("", done.stdout + done.stderr).rstrip()
        if done.returncode:
            printed += f"\n(exit status {done.returncode})"
        shown.append((command.shell, service.shown(printed)))
    return shown


# --- Screenshots ------------------------------------------------------------------------------------------


def admin_password(bootstrap_output: str) -> tuple[str, str]:
    match = re.search(r"Admin login \(shown once\): (\S+) / (\S+)", bootstrap_output)
    if match is None:
        raise SystemExit("bootstrap_demo printed no admin login")
    return match[1], match[2]


def screenshots(service: Service, *, run_id: int) -> None:
    sys.path.insert(0, str(REPO))
    from tests.admin.chromium import CHROMIUM, Chromium

    if CHROMIUM is None:
        raise SystemExit("Chromium is not installed (apt-get install chromium), or pass --no-screenshots")
    username, password = admin_password(service.started_output)
    IMAGES.mkdir(parents=True, exist_ok=True)
    with Chromium(profile=service.root / "profile", log=service.root / "chromium.log") as browser:
        page = browser.open_page(width=1400, height=1000)
        browser.navigate(page, f"{service.url}/admin/login/")
        browser.fill(page, "#id_username", username)
        browser.fill(page, "#id_password", password)
        browser.click(page, "input[type=submit]")
        # The admin's sidebar closed, as its toggle leaves it, so the page has the width.
        browser.evaluate(page, "localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
        for url, name in (
            (f"{service.url}/admin/workflows/ledgerentry/spend/", "spend.png"),
            (f"{service.url}/admin/workflows/run/{run_id}/change/", "run.png"),
        ):
            browser.navigate(page, url)
            if browser.evaluate(page, "document.querySelector('#id_username') !== null"):
                raise SystemExit(f"{url} asked to log in: the admin login did not take")
            (IMAGES / name).write_bytes(browser.screenshot(page))
            print(f"Saved {(IMAGES / name).relative_to(REPO)}.")


# --- Main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-screenshots", action="store_true", help="leave docs/images/ as it is")
    options = parser.parse_args()
    with_cli = CLI_MODULE.is_file()
    root = Path(tempfile.mkdtemp(prefix="readme-examples-"))
    service = Service(root)
    try:
        service.start()
        outputs = {"make-run": service.shown(service.started_output.rstrip())}
        for step in STEPS:
            if step.commands:
                outputs[step.name] = run_curl(service, step)
                print(f"Ran {step.name}.")
        cli_outputs = {}
        if with_cli:
            for step in STEPS:
                if step.cli:
                    cli_outputs[step.name] = run_cli(service, step)
                    print(f"Ran {step.name} with the CLI.")
        else:
            print(f"{CLI_MODULE.relative_to(REPO)} does not exist yet: the README's CLI examples are left out.")
        rendered = {step.name: render_block(step, outputs[step.name], cli_outputs.get(step.name, [])) for step in STEPS}
        README.write_text(rewrite(README.read_text(), rendered))
        print("Rewrote README.md's example blocks.")
        if not options.no_screenshots:
            screenshots(service, run_id=3)
    finally:
        service.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
