"""Files that only the service's own user may read: an install's generated secrets and its SQLite database.

Each file is created with its final mode, so no other user can read it at any moment. A secret
appears under its name only when it is complete. Two processes that start at once on a fresh install
therefore agree on one value, and neither ever reads a partly written file.
"""

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def private_directory(*, path: Path) -> None:
    """Create `path` with mode 0700 if it is missing. Missing parents get the usual mode, and an existing
    directory is left as it is: it may be one the operator shares on purpose."""
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)


def install_secret(*, path: Path, generate: Callable[[], str]) -> str:
    """The secret kept in `path`. The first call on an install calls `generate` and keeps the value there, mode 0600.

    The value is written to a file of this process's own, then hard-linked to `path`. A link never
    replaces a file, so when two processes race, the first link wins and both read its value.
    """
    if not path.exists():
        own = _new_file(directory=path.parent, text=generate() + "\n")
        try:
            os.link(own, path)
        except FileExistsError:
            pass  # another process linked its secret first; that one is the install's
        finally:
            own.unlink()
    _restrict(path)
    value = path.read_text().strip()
    if not value:
        raise ImproperlyConfigured(
            f"{path} is empty. Restore it from a backup. Or delete it and a new secret is generated, "
            "but anything encrypted or signed with the old one can then no longer be read."
        )
    return value


def write_private_file(*, path: Path, text: str) -> None:
    """Replace `path` with `text`. The new file has mode 0600 from the moment it exists."""
    os.replace(_new_file(directory=path.parent, text=text), path)


def private_sqlite_file(*, path: Path) -> None:
    """Create the SQLite file empty, with mode 0600, before SQLite opens it. SQLite would follow the umask,
    usually 0644. SQLite creates the -wal and -shm files with the database file's mode. Files that an
    earlier release created are restricted to 0600 here. A missing directory is left for SQLite to report."""
    if not path.parent.is_dir():
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
            _restrict(file)


def _new_file(*, directory: Path, text: str) -> Path:
    path = directory / f".tmp-{os.getpid()}-{secrets.token_hex(8)}"
    # O_EXCL: never opens a file, or a symbolic link, that someone else put there.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    return path


def _restrict(path: Path) -> None:
    """Remove group and other access from a file of this user's own. A file that another user owns is
    that user's to change."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return
    if status.st_uid == os.getuid() and status.st_mode & 0o077:
        path.chmod(FILE_MODE)
