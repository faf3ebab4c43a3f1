"""Who may use the gateway: access keys, their secrets and the user each belongs to.

A credentials file is TOML with one ``[[user]]`` table per user (``name``, ``access_key``, ``secret_key``);
``DFS_S3_ACCESS_KEY`` and ``DFS_S3_SECRET_KEY`` define a single user (named after the access key) instead. Secrets
stay inside ``Credentials``: its ``repr`` names users and keys only, so logging it never leaks a secret.
``generate`` writes a fresh file (mode 0600) for ``dfsd cluster``.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY_ENV = "DFS_S3_ACCESS_KEY"
SECRET_KEY_ENV = "DFS_S3_SECRET_KEY"

# The user an --anonymous gateway acts as: it owns the buckets anonymous requests create.
ANONYMOUS = "anonymous"


class CredentialsError(Exception):
    """The credentials file or environment cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class User:
    name: str
    access_key: str
    secret_key: str = field(repr=False)


@dataclass(frozen=True)
class Credentials:
    """The users of one gateway, by access key."""

    users: Mapping[str, User]

    def secret(self, access_key: str) -> str | None:
        """The secret of ``access_key`` (None: unknown); the lookup ``sigv4.verify`` takes."""
        user = self.users.get(access_key)
        return user.secret_key if user else None

    def user(self, access_key: str) -> User | None:
        return self.users.get(access_key)


def load(path: Path | None, environ: Mapping[str, str] = os.environ) -> Credentials:
    """The users of ``path`` (a TOML file), else of $DFS_S3_ACCESS_KEY/$DFS_S3_SECRET_KEY; may be empty."""
    if path is not None:
        return _from_file(path)
    access, secret = environ.get(ACCESS_KEY_ENV), environ.get(SECRET_KEY_ENV)
    if bool(access) != bool(secret):
        raise CredentialsError(f"set both {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}, or neither")
    if not access or not secret:
        return Credentials({})
    return Credentials({access: User(access, access, secret)})


def _from_file(path: Path) -> Credentials:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise CredentialsError(f"cannot read the credentials file {path}: {err}") from None
    tables = document.get("user", [])
    if not isinstance(tables, list):
        raise CredentialsError(f"{path}: users are [[user]] tables")
    users: dict[str, User] = {}
    for index, table in enumerate(tables, 1):
        values = [table.get(key) if isinstance(table, dict) else None for key in ("name", "access_key", "secret_key")]
        strings = [value for value in values if isinstance(value, str) and value]
        if len(strings) != 3:
            raise CredentialsError(f"{path}: [[user]] number {index} needs name, access_key and secret_key strings")
        name, access, secret = strings
        if access in users:
            raise CredentialsError(f"{path}: the access key of user {name!r} is used twice")
        users[access] = User(name, access, secret)
    if not users:
        raise CredentialsError(f"{path} defines no [[user]]")
    return Credentials(users)


def generate(path: Path, name: str = "admin") -> User:
    """Write a credentials file holding one new user, readable by its owner only (0600), and return the user."""
    user = User(name, "DFSD" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30))
    text = f'[[user]]\nname = "{user.name}"\naccess_key = "{user.access_key}"\nsecret_key = "{user.secret_key}"\n'
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    os.chmod(path, 0o600)
    return user
