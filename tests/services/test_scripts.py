"""A script step's command on a worker: no shell, only the environment the step sets, a scratch
directory that goes with it, a timeout that stops whatever it started, and bounded memory and output."""

import time
from pathlib import Path

import pytest

from workflows.services.scripts import ScriptFailed, script_run


def running(pid: int) -> bool:
    """Whether the process runs: a killed one may linger as a zombie until its new parent reaps it."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)
    return True


def run(*args, env=None, stdin=None, timeout=10, command="sh"):
    return script_run(command=command, args=list(args), env=env or {}, stdin=stdin, timeout=timeout)


def test_the_command_sees_only_the_environment_the_step_sets_in_a_scratch_directory_that_goes(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://secret@db/prod")
    ran = run("-c", 'env; echo "cwd=$PWD"', env={"GREETING": "hi"})

    lines = ran.stdout.splitlines()
    names = {line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("cwd=")}
    assert names <= {"PATH", "HOME", "TMPDIR", "LANG", "GREETING", "PWD", "SHLVL", "_", "OLDPWD"}
    assert "secret" not in ran.stdout and "GREETING=hi" in lines
    scratch = next(line[4:] for line in lines if line.startswith("cwd="))
    assert Path(scratch).name.startswith("budgetsvc-script-") and not Path(scratch).exists()
    assert ran.exit_code == 0


def test_no_shell_reads_the_arguments_and_stdin_reaches_the_command():
    ran = run("-c", 'printf "%s|" "$@"; cat', "sh", "$HOME; rm -rf /", "`id`", stdin="from stdin")

    assert ran.stdout == "$HOME; rm -rf /|`id`|from stdin"


def test_a_failing_command_is_its_exit_code_not_an_error():
    ran = run("-c", "echo oops >&2; exit 3")
    assert (ran.stderr, ran.exit_code) == ("oops\n", 3)


def test_a_command_past_its_timeout_is_stopped_with_everything_it_started(tmp_path):
    marker = tmp_path / "child"
    with pytest.raises(ScriptFailed, match="ran longer than its 1 seconds"):
        run("-c", f"(sleep 30; touch {marker}) & echo $! > {tmp_path / 'pid'}; sleep 30", timeout=1)

    assert not running(int((tmp_path / "pid").read_text()))
    assert not marker.exists()


def test_whatever_a_command_leaves_running_is_stopped_when_it_ends():
    ran = run("-c", "sleep 30 & echo $!")
    assert not running(int(ran.stdout))


def test_memory_and_output_are_bounded(settings):
    settings.SCRIPT_MAX_MEMORY_MB = 64
    settings.SCRIPT_MAX_OUTPUT_BYTES = 1000
    greedy = run("-c", "bytearray(512 * 1024 * 1024)", command="python3")
    assert greedy.exit_code != 0 and "MemoryError" in greedy.stderr

    chatty = run("-c", "head -c 5000000 /dev/zero | tr '\\\\0' x")
    assert len(chatty.stdout) <= 1000


@pytest.mark.parametrize(
    ("command", "message"),
    [("bin/tool", "relative path"), ("no-such-tool-here", "not an executable"), ("/etc/passwd", "not an executable")],
)
def test_a_command_that_is_not_an_executable_on_the_path_is_refused(command, message):
    with pytest.raises(ScriptFailed, match=message):
        run(command=command)


def test_a_step_cannot_change_what_confines_its_command(settings):
    ran = run("-c", 'echo "$PATH $HOME"', env={"PATH": "/tmp", "HOME": "/root"})
    path, home = ran.stdout.split()
    assert path == settings.SCRIPT_PATH and Path(home).name.startswith("budgetsvc-script-")
