"""Installs are reproducible: the suite runs on exactly the versions the lock pins, and the lock
matches pyproject.toml. A release of an SDK can change what a provider call is billed (an
anthropic release once made a cut-off stream cost 1 output token), so it must not arrive unseen."""

import importlib.util
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _check_lock():
    spec = importlib.util.spec_from_file_location("check_lock", ROOT / "tools" / "check_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lock_files_match_pyproject():
    assert _check_lock().check() == []


def test_a_dependency_added_to_pyproject_without_a_new_lock_is_refused(tmp_path, monkeypatch):
    check_lock = _check_lock()
    for name in ("pylock.toml", "pylock.test.toml", "requirements-build.in"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    pyproject = (ROOT / "pyproject.toml").read_text().replace('"cryptography>=43",', '"cryptography>=43",\n    "leftpad>=1",')
    (tmp_path / "pyproject.toml").write_text(pyproject)
    monkeypatch.setattr(check_lock, "ROOT", tmp_path)

    problems = check_lock.check()

    assert any("make lock" in problem and "pylock.toml" in problem for problem in problems)
    assert any("does not pin leftpad" in problem for problem in problems)


@pytest.mark.skipif(
    Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
    reason="checks the .venv that make test installs from the lock (make test-latest uses another on purpose)",
)
def test_every_locked_package_is_installed_at_its_locked_version():
    wrong = {}
    for package in _check_lock().locked_packages((ROOT / "pylock.test.toml").read_text()):
        if "marker" in package:
            continue  # for other platforms or Python versions
        installed = metadata.version(package["name"])
        if installed != package["version"]:
            wrong[package["name"]] = (package["version"], installed)
    assert wrong == {}
