"""The users file: basic-auth users added with ``terramind-openeo serve --add-user NAME``.

A JSON object ``{"name": "scrypt$..."}`` at ``Settings.users_path`` (``users_file``, default
``<data_dir>/users.json``), readable by the server's user only; read again when it changes, so a user
added while the server runs can log in at once. Users of the ``basic_users`` setting come first.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from pathlib import Path

from terramind_openeo.files import atomic_path

log = logging.getLogger(__name__)

USER_NAME = re.compile(r"^[\w\-.]{1,64}$")


class UsersFileError(ValueError):
    """The users file cannot be read or written, or a user name is not acceptable; the message says which."""


def read_users(path: Path) -> dict[str, str]:
    """``{name: hash}`` of the file, ``{}`` when it does not exist."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsersFileError(f"cannot read the users file {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UsersFileError(f"the users file {path} must be a JSON object of name -> password hash")
    return {str(k): v for k, v in data.items()}


def add_user(path: Path, name: str, password_hash: str) -> bool:
    """Add ``name`` (or replace its hash); True when it is new. Written to a temporary file, then renamed."""
    if not USER_NAME.match(name):
        raise UsersFileError(f"user name {name!r} must be 1 to 64 letters, digits, '_', '-' or '.'")
    users = read_users(path)
    new = name not in users
    users[name] = password_hash
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, durable=True, unique=True) as partial:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # password hashes: the owner only
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(users, f, indent=1, sort_keys=True)
            f.write("\n")
    return new


class UsersFile:
    """The file's users, re-read when its modification time changes."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._users: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        try:
            stat = self.path.stat()
            stamp: tuple | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._users = read_users(self.path) if stamp else {}
                except UsersFileError as exc:  # keep the last good list; say why once per change
                    log.error("%s", exc)
                self._stamp = stamp
            return self._users.get(name)
