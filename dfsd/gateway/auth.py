"""Who sent a request: the one call the server makes, whichever signature the request carries.

A presigned URL in Signature Version 2 (what boto3's ``generate_presigned_url`` makes by default) goes to ``sigv2``;
everything else, signed headers and V4 presigned URLs alike, to ``sigv4``, which also refuses unsigned requests.
"""

from __future__ import annotations

from .sigv2 import is_presigned_v2, verify_presigned_v2
from .sigv4 import Authorised, SecretLookup, SignedRequest, verify


def authenticate(
    request: SignedRequest,
    secrets: SecretLookup,
    now: float,
    *,
    region: str | None = None,
    virtual_host_bucket: str | None = None,
) -> Authorised:
    """Verify ``request``'s signature at time ``now`` (see ``sigv4.verify``); raise ``S3Error`` if it fails."""
    if request.header("authorization") is None and is_presigned_v2(request):
        return verify_presigned_v2(request, secrets, now, virtual_host_bucket)
    return verify(request, secrets, now, region)
