"""Soak: does `make run`'s service stay up, lose no step and leave no webhook pending over a long stretch?

    .venv/bin/python bench/soak.py [--runs 1000] [--minutes 10] [--drain-minutes 10] [--keep]

The service runs as `make run` starts it, on the embedded defaults (SQLite and the filesystem broker,
whatever DATABASE_URL and CELERY_BROKER_URL say), in a throwaway VAR_DIR: the Makefile's `run` recipe
(migrate, collectstatic, loadprices, bootstrap_demo, then `manage.py serve`), run here step by step, as
`make run` itself would first reinstall the venv whenever the lock is newer than it.

The demo team gets a webhook pointing at a receiver this script runs on 127.0.0.1 (allowed with
OUTBOUND_ALLOWED_NETWORKS, as an operator allows a local endpoint) that answers 204, and alert
thresholds of 50% and 80%. Each run is examples/research-pipeline.yaml (three steps on the offline
`fake` provider, $0.30 each) with a $1 budget, so it crosses both thresholds: two webhooks a run.
The runs are started through the API at a steady rate over `--minutes`; then the script waits up to
`--drain-minutes` for every run to end and every delivery to be delivered or dead, and stops serve with
SIGTERM.

Printed: runs completed and otherwise, steps succeeded against the three a run expected, webhook
deliveries by status and the requests the receiver got against the two a run expected, child restarts
the supervisor logged, files the broker moved to its rejected/ folder, p50/p95 run duration (created to
finished), the wall time, the peak RSS of serve and all its processes together (sampled from /proc
every 2 s), and the machine's CPUs and load average, as other work on it slows the service.
The exit status is 1 when the soak did not hold: a run not completed, a step missing, a delivery not
delivered, a restart, or a rejected broker file. With --keep the VAR_DIR (serve.log, the database) is
kept and its path printed.
"""

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
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "research-pipeline.yaml"
STEPS_PER_RUN = 3
WEBHOOKS_PER_RUN = 2  # 50% at $0.60 and 80% at $0.90 of the $1 budget
# Environment that would point the service elsewhere than the embedded defaults in VAR_DIR.
NOT_INHERITED = (
    "DATABASE_URL", "CELERY_BROKER_URL", "CELERY_FILESYSTEM_BROKER_DIR", "CELERY_TASK_DEFAULT_QUEUE",
    "DJANGO_SETTINGS_MODULE", "BUDGETSVC_VAR_DIR", "DJANGO_STATIC_ROOT",
)


class Receiver(ThreadingHTTPServer):
    """The team's webhook endpoint: counts what it is sent and answers 204."""

    daemon_threads = True

    def __init__(self):
        self.received = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/budget"


class _ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.received += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


class RssSampler(threading.Thread):
    """The peak resident memory of a process and all its descendants together, read from /proc."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_bytes = 0
        self.stopped = threading.Event()

    def run(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self.stopped.wait(2):
            self.peak_bytes = max(self.peak_bytes, sum(_rss_pages(pid) for pid in self._tree()) * page)

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
        tree, pending = [], [self.pid]
        while pending:
            pid = pending.pop()
            tree.append(pid)
            pending.extend(children.get(pid, []))
        return tree


def _rss_pages(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except OSError:
        return 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(base_url: str, key: str, method: str, path: str, body: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        base_url + path, data=body, method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True  # 401 without a key: the server is up
    except OSError:
        return False
    return True


def manage(*args: str, env: dict, log) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--drain-minutes", type=float, default=10)
    parser.add_argument("--keep", action="store_true")
    options = parser.parse_args()

    var_dir = Path(tempfile.mkdtemp(prefix="budgetsvc-soak-"))
    port = free_port()
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env = {
        **{name: value for name, value in os.environ.items() if name not in NOT_INHERITED},
        "DJANGO_SETTINGS_MODULE": "budgetsvc.settings",
        "BUDGETSVC_VAR_DIR": str(var_dir),
        "DJANGO_STATIC_ROOT": str(var_dir / "static"),
        "PORT": str(port),
        "OUTBOUND_ALLOWED_NETWORKS": "127.0.0.1/32",
    }
    # This process reads the same database, to set up the team and count what happened.
    os.environ.update(env)
    for name in NOT_INHERITED:
        if name not in env:
            os.environ.pop(name, None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()

    log_path = var_dir / "serve.log"
    setting_up = time.monotonic()
    with log_path.open("w") as log:
        for args in (("migrate", "--noinput"), ("collectstatic", "--noinput", "--verbosity", "0"), ("loadprices",), ("bootstrap_demo",)):
            manage(*args, env=env, log=log)
        serve = subprocess.Popen(
            [sys.executable, "manage.py", "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        sampler = RssSampler(serve.pid)
        sampler.start()
        try:
            print(f"Set up in {time.monotonic() - setting_up:.0f} s; serve started.", flush=True)
            figures = soak(options, base_url=f"http://127.0.0.1:{port}", var_dir=var_dir, receiver=receiver)
        finally:
            if serve.poll() is None:
                serve.send_signal(signal.SIGTERM)
                try:
                    serve.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(serve.pid, signal.SIGKILL)
                    serve.wait()
            sampler.stopped.set()
            receiver.shutdown()
    serve_log = log_path.read_text()
    figures["child restarts (supervisor)"] = len(re.findall(r"; restarting it in ", serve_log))
    figures["broker files moved aside"] = len(list((var_dir / "broker" / "rejected").iterdir()))
    figures["peak RSS, serve and children (MiB)"] = round(sampler.peak_bytes / 2**20)
    figures["machine: CPUs, load average 1/5/15 min at the end"] = (os.cpu_count(), os.getloadavg())
    held = report(figures)
    if options.keep:
        print(f"VAR_DIR kept: {var_dir}")
    else:
        shutil.rmtree(var_dir, ignore_errors=True)
    return 0 if held else 1


def soak(options, *, base_url: str, var_dir: Path, receiver: Receiver) -> dict:
    from workflows.models import UNDELIVERED_STATUSES, DeliveryStatus, Run, RunStatus, Step, StepStatus, Team, WebhookDelivery

    deadline = time.monotonic() + 180
    while not answers(base_url + "/api/v1/runs"):
        if time.monotonic() > deadline:
            raise SystemExit(f"serve did not answer within 3 minutes; see {var_dir / 'serve.log'}")
        time.sleep(0.5)
    print(f"serve answered after {time.monotonic() - deadline + 180:.0f} s.", flush=True)
    team = Team.objects.get(name="demo")
    team.alert_thresholds = [50, 80]
    team.webhook_url = receiver.url
    team.save(update_fields=["alert_thresholds", "webhook_url"])
    key = (var_dir / "demo-api-key").read_text().strip()
    status, body = call(base_url, key, "POST", "/api/v1/workflows", EXAMPLE.read_bytes(), "application/yaml")
    if status != 201:
        raise SystemExit(f"uploading the workflow answered {status}: {body}")

    run_body = json.dumps(
        {"workflow": "research-pipeline", "inputs": {"topic": "soak"}, "limits": {"budget_usd": "1", "budget_mode": "enforce"}}
    ).encode()
    interval = options.minutes * 60 / options.runs
    started, refused = 0, []
    began = time.monotonic()
    print(f"Starting {options.runs} runs over {options.minutes:g} minutes, one every {interval:.2f} s.", flush=True)
    for number in range(options.runs):
        time.sleep(max(began + number * interval - time.monotonic(), 0))
        status, body = call(base_url, key, "POST", "/api/v1/runs", run_body, "application/json")
        if status == 202:
            started += 1
        else:
            refused.append(status)
        if (number + 1) % max(options.runs // 10, 1) == 0:
            print(f"  {number + 1} runs started after {time.monotonic() - began:.0f} s", flush=True)
    starting_seconds = time.monotonic() - began

    deadline = time.monotonic() + options.drain_minutes * 60
    runs, deliveries = Run.objects.filter(team=team), WebhookDelivery.objects.filter(team=team)
    while time.monotonic() < deadline and (
        runs.filter(status__in=(RunStatus.QUEUED, RunStatus.RUNNING)).exists()
        or deliveries.filter(status__in=UNDELIVERED_STATUSES).exists()
    ):
        time.sleep(2)
    durations = [
        (run.finished_at - run.created_at).total_seconds()
        for run in runs.exclude(finished_at=None).only("created_at", "finished_at")
    ]
    by_status = {status: runs.filter(status=status).count() for status in RunStatus.values}
    delivery_status = {status: deliveries.filter(status=status).count() for status in DeliveryStatus.values}
    return {
        "runs started": started,
        "runs refused by the API": len(refused),
        "runs completed": by_status.pop(RunStatus.COMPLETED),
        "runs in another state": {status: count for status, count in by_status.items() if count},
        "steps succeeded": Step.objects.filter(run__team=team, status=StepStatus.SUCCEEDED).count(),
        "steps expected": started * STEPS_PER_RUN,
        "steps in another state": Step.objects.filter(run__team=team).exclude(status=StepStatus.SUCCEEDED).count(),
        "webhook deliveries": delivery_status,
        "webhook deliveries expected": started * WEBHOOKS_PER_RUN,
        "webhook requests received": receiver.received,
        "run duration p50 (s)": round(percentile(durations, 0.50), 2),
        "run duration p95 (s)": round(percentile(durations, 0.95), 2),
        "starting runs took (s)": round(starting_seconds),
        "wall time (s)": round(time.monotonic() - began),
    }


def report(figures: dict) -> bool:
    """Print the figures; whether the soak held."""
    for name, value in figures.items():
        print(f"{name}: {value}")
    held = (
        figures["runs refused by the API"] == 0
        and figures["runs completed"] == figures["runs started"]
        and figures["steps succeeded"] == figures["steps expected"]
        and figures["steps in another state"] == 0
        and figures["webhook deliveries"]["delivered"] == figures["webhook deliveries expected"]
        and figures["child restarts (supervisor)"] == 0
        and figures["broker files moved aside"] == 0
    )
    print("The soak held." if held else "The soak did NOT hold.")
    return held


if __name__ == "__main__":
    sys.exit(main())
