"""bench/soak.py in a short smoke run, so the script keeps working: the full soak's figures are in
docs/operations.md."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.integration


# Most of it is setting up (four manage.py commands) and starting and stopping serve: about a minute
# and a half on an idle machine, twice that on a busy one.
@pytest.mark.timeout(300)
def test_a_short_soak_completes_every_run_and_delivers_every_webhook():
    result = subprocess.run(
        [sys.executable, "bench/soak.py", "--minutes", "0.2", "--runs", "10", "--drain-minutes", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    print(result.stdout, result.stderr[-3000:])  # pytest shows them when the test failed
    assert result.returncode == 0
    assert "runs completed: 10\n" in result.stdout
    assert "steps succeeded: 30\n" in result.stdout
    assert "webhook deliveries: {'pending': 0, 'delivered': 20, 'failed': 0, 'dead': 0}\n" in result.stdout
    assert "child restarts (supervisor): 0\n" in result.stdout
