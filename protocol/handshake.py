"""Proving knowledge of the cluster's shared secret without sending it: HMAC-SHA256 challenge and response.

Each side of a connection contributes a fresh random nonce (the caller supplies it: this module has no randomness, no
clock and no I/O). The server proves itself first, in ``welcome``, so a client never streams a file to an impostor; the
client then answers with ``auth``. The two proofs use different labels, and the client's also covers its role, so no
proof can be replayed as another (reflection), and fresh nonces on both sides make every proof single-use.
"""

from __future__ import annotations

import hashlib
import hmac

NONCE_BYTES = 32  # 256 random bits from each side


def server_proof(secret: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    return _mac(secret, b"dfsd server proof", client_nonce, server_nonce)


def client_proof(secret: bytes, role: str, client_nonce: bytes, server_nonce: bytes) -> bytes:
    return _mac(secret, b"dfsd client proof " + role.encode(), client_nonce, server_nonce)


def proofs_match(expected: bytes, given: bytes | None) -> bool:
    """Constant-time comparison, so timing says nothing about how much of a guess was right."""
    return given is not None and hmac.compare_digest(expected, given)


def _mac(secret: bytes, label: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    # Length-prefix each part so that no two different inputs produce the same message.
    message = b"".join(len(part).to_bytes(4, "big") + part for part in (label, client_nonce, server_nonce))
    return hmac.new(secret, message, hashlib.sha256).digest()
