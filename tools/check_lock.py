"""Fail when a lock file no longer matches pyproject.toml.

The locks are PEP 751 files: pylock.toml (the service, for the image) and pylock.test.toml (the
service and its tests, for make run and make test). `make lock` writes each with a fingerprint of
the inputs it was compiled from: the dependency tables of pyproject.toml and requirements-build.in.
Any change to those makes the fingerprint differ, so a dependency cannot change without its lock
changing in the same commit. Standard library only: it runs before anything is installed.

    python tools/check_lock.py            # check both locks
    python tools/check_lock.py --write    # stamp them (make lock does this)
    python tools/check_lock.py --pins     # the test lock's versions as requirements, to constrain the other
"""

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {"pylock.toml": [], "pylock.test.toml": ["test"]}
TEST_LOCK = "pylock.test.toml"
FINGERPRINT = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})$", re.MULTILINE)
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
        pinned = {_normalise(package["name"]) for package in locked_packages(lock)}
        for requirement in inputs[1:]:
            name = _normalise(REQUIREMENT_NAME.match(requirement).group(1))
            if name not in pinned:
                problems.append(f"{lock_name} does not pin {name}: run `make lock`.")
    return problems


def locked_packages(lock: str) -> list[dict]:
    """The `[[packages]]` entries of a PEP 751 lock: name, version, marker, files."""
    return tomllib.loads(lock).get("packages", [])


def pins() -> str:
    """The test lock's versions, one `name==version` a line."""
    packages = locked_packages((ROOT / TEST_LOCK).read_text())
    return "".join(f"{package['name']}=={package['version']}\n" for package in packages)


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
    if sys.argv[1:] == ["--pins"]:
        sys.stdout.write(pins())
        sys.exit(0)
    found = check()
    for problem in found:
        print(problem, file=sys.stderr)
    if not found:
        print("The lock files match pyproject.toml.")
    sys.exit(1 if found else 0)
