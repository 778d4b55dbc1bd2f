import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the API and admin with gunicorn and run a Celery worker beside it, in the foreground."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
        parser.add_argument("--worker-concurrency", default=os.environ.get("WORKER_CONCURRENCY", "2"))

    def handle(self, *args, **options):
        commands = {
            "web": [
                sys.executable, "-m", "gunicorn", "budgetsvc.wsgi",
                "--bind", f"{options['host']}:{options['port']}",
                "--workers", "2", "--access-logfile", "-",
            ],
            "worker": [
                sys.executable, "-m", "celery", "-A", "budgetsvc", "worker",
                "--loglevel", "INFO", "--concurrency", str(options["worker_concurrency"]),
            ],
        }
        processes = {name: subprocess.Popen(argv) for name, argv in commands.items()}
        self.stdout.write(
            f"Starting the web server on http://{options['host']}:{options['port']}/ "
            "(API under /api/v1/, admin under /admin/)."
        )

        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping and all(p.poll() is None for p in processes.values()):
            time.sleep(0.2)
        exited = [name for name, p in processes.items() if p.poll() is not None]
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        if exited and not stopping:
            raise SystemExit(f"{', '.join(exited)} exited; stopped the rest.")
