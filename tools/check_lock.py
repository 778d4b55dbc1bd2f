"""Fail when a lock file no longer matches pyproject.toml.

`make lock` writes each lock with a fingerprint of the inputs it was compiled from: the dependency
tables of pyproject.toml and requirements-build.in. Any change to those makes the fingerprint
differ, so a dependency cannot change without its lock changing in the same commit. Standard library
only: it runs before anything is installed.

    python tools/check_lock.py            # check requirements.txt and requirements-test.txt
    python tools/check_lock.py --write    # stamp them (make lock does this)
"""

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {"requirements.txt": [], "requirements-test.txt": ["test"]}
FINGERPRINT = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})$", re.MULTILINE)
PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", re.MULTILINE)
REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _inputs(extras: list[str]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    build = (ROOT / "requirements-build.in").read_text().splitlines()
    requirements += [line for line in build if line.strip() and not line.startswith("#")]
    return [project["requires-python"], *requirements]


def _fingerprint(inputs: list[str]) -> str:
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()


def check() -> list[str]:
    problems = []
    for lock_name, extras in LOCKS.items():
        lock_path = ROOT / lock_name
        if not lock_path.exists():
            problems.append(f"{lock_name} is missing: run `make lock`.")
            continue
        lock = lock_path.read_text()
        inputs = _inputs(extras)
        recorded = FINGERPRINT.search(lock)
        if recorded is None or recorded.group(1) != _fingerprint(inputs):
            problems.append(
                f"{lock_name} was not compiled from the current pyproject.toml "
                "and requirements-build.in: run `make lock` and commit the result."
            )
        pinned = {_normalise(name) for name in PINNED.findall(lock)}
        for requirement in inputs[1:]:
            name = _normalise(REQUIREMENT_NAME.match(requirement).group(1))
            if name not in pinned:
                problems.append(f"{lock_name} does not pin {name}: run `make lock`.")
    return problems


def write() -> None:
    for lock_name, extras in LOCKS.items():
        lock_path = ROOT / lock_name
        lock = FINGERPRINT.sub("", lock_path.read_text()).lstrip("\n")
        stamp = f"# inputs-sha256: {_fingerprint(_inputs(extras))}\n"
        lock_path.write_text(stamp + lock)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
        sys.exit(0)
    found = check()
    for problem in found:
        print(problem, file=sys.stderr)
    if not found:
        print("The lock files match pyproject.toml.")
    sys.exit(1 if found else 0)
