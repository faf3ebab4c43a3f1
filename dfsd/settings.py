"""What a process needs to know to talk safely: the shared secret, TLS, and the limits it enforces on its peers.

Every connection a process opens or accepts goes through one ``Security``, so the manager, the storage nodes and the
client apply the same rules: with a secret, both ends prove they know it in the handshake (``protocol/handshake.py``);
with TLS, every byte is encrypted and the server's certificate is checked against the configured CA.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from .protocol import MAX_FRAME_SIZE, MAX_NAME_BYTES

SECRET_ENV = "DFS_SECRET"
SECRET_FILE_ENV = "DFS_SECRET_FILE"
TLS_CA_ENV = "DFS_TLS_CA"

# How a user gives a process the secret, for the handshake's "not authorised" errors.
SECRET_HINT = f"set {SECRET_ENV} or --secret-file"


@dataclass(frozen=True)
class Security:
    secret: bytes | None = None
    server_tls: ssl.SSLContext | None = None  # for the listener
    client_tls: ssl.SSLContext | None = None  # for connections this process opens

    @classmethod
    def load(
        cls,
        secret_file: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_ca: Path | None = None,
    ) -> Security:
        """From flags, falling back to $DFS_SECRET_FILE, $DFS_SECRET and $DFS_TLS_CA."""
        return cls(
            secret=load_secret(secret_file),
            server_tls=server_context(tls_cert, tls_key) if tls_cert else None,
            client_tls=client_context(tls_ca or _env_path(TLS_CA_ENV)),
        )


def load_secret(secret_file: Path | None = None) -> bytes | None:
    """The shared secret: the file's whole text, else $DFS_SECRET, with white space at both ends removed; None means the
    cluster runs open."""
    path = secret_file or _env_path(SECRET_FILE_ENV)
    if path is not None:
        try:
            secret = path.read_text(encoding="utf-8").strip().encode()
        except OSError as err:
            raise ValueError(
                f"cannot read the secret file {path} ({err.strerror}): give a file this user can read"
            ) from None
        except UnicodeDecodeError:
            raise ValueError(f"the secret file {path} is not UTF-8 text") from None
    else:
        secret = os.environ.get(SECRET_ENV, "").strip().encode()
    if path is not None and not secret:
        raise ValueError(f"the secret file {path} is empty")
    return secret or None


def server_context(cert: Path, key: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def client_context(ca: Path | None) -> ssl.SSLContext | None:
    """TLS for outgoing connections, verifying servers against ``ca``; None (plain TCP) without a CA."""
    if ca is None:
        return None
    return ssl.create_default_context(cafile=str(ca))


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


@dataclass(frozen=True)
class Limits:
    """What a server accepts from its peers; each has a flag (see ``dfsd manager --help``) and a documented default."""

    max_frame_size: int = MAX_FRAME_SIZE  # bytes in one frame
    max_name_bytes: int = MAX_NAME_BYTES  # UTF-8 bytes in a file name
    max_file_size: int | None = None  # bytes in one file; None: as much as the disks hold
    max_connections: int = 10_000  # connections open at once; more are refused with error 1
    # Seconds a connection may wait between requests, counted once the peer has taken all of our last answer.
    idle_timeout: float = 300.0
    # Seconds a peer may leave undone what it owes us (PROTOCOL.md 9.5): the next byte of the handshake, of a frame it
    # has begun or of a request under way, or taking some of the bytes we send. A peer waiting for us is not timed. A
    # node also gives the target of a transfer this long.
    request_timeout: float = 60.0
