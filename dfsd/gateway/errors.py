"""S3 errors: one registry of error codes, each with its HTTP status and the message a client shows.

S3 clients branch on the ``<Code>`` of an error body (and on the status), never on its message, so the code is the
contract. Every error the gateway can answer is one ``S3Error`` carrying a code from ``S3_ERRORS``; asking for a code
that is not in the registry is a bug and fails at once (``KeyError``), so no response can carry an unknown code or a
status that disagrees with it. ``message`` defaults to the registry's text and may be replaced by a more precise one
that says what to do. ``s3xml.render_error`` turns an ``S3Error`` into the XML body S3 sends.
"""

from __future__ import annotations

from typing import NamedTuple


class ErrorSpec(NamedTuple):
    status: int
    message: str


# Codes and statuses as Amazon S3 answers them (the "Error responses" list of the S3 API reference).
S3_ERRORS: dict[str, ErrorSpec] = {
    "AccessControlListNotSupported": ErrorSpec(400, "The bucket does not allow ACLs."),
    "AccessDenied": ErrorSpec(403, "Access Denied."),
    "AuthorizationHeaderMalformed": ErrorSpec(400, "The authorization header is malformed."),
    "AuthorizationQueryParametersError": ErrorSpec(400, "The presigned URL's X-Amz-* query parameters are malformed."),
    "BadDigest": ErrorSpec(400, "The checksum you specified did not match what we received."),
    "BucketAlreadyExists": ErrorSpec(409, "The requested bucket name is not available; choose another name."),
    "BucketAlreadyOwnedByYou": ErrorSpec(409, "You already own this bucket."),
    "BucketNotEmpty": ErrorSpec(409, "The bucket you tried to delete is not empty; delete its objects first."),
    "EntityTooLarge": ErrorSpec(400, "Your proposed upload exceeds the maximum allowed object size."),
    "EntityTooSmall": ErrorSpec(400, "Your proposed upload is smaller than the minimum allowed object size."),
    "IncompleteBody": ErrorSpec(400, "You did not provide the number of bytes specified by the Content-Length."),
    "InternalError": ErrorSpec(500, "We encountered an internal error; please try again."),
    "InvalidAccessKeyId": ErrorSpec(403, "The access key ID you provided does not exist in our records."),
    "InvalidArgument": ErrorSpec(400, "Invalid argument."),
    "InvalidBucketName": ErrorSpec(400, "The specified bucket is not valid."),
    "InvalidDigest": ErrorSpec(400, "The Content-MD5 or checksum value you specified is not valid."),
    "InvalidPart": ErrorSpec(400, "One or more of the specified parts could not be found, or its ETag did not match."),
    "InvalidPartOrder": ErrorSpec(400, "The list of parts was not in ascending order by part number."),
    "InvalidRange": ErrorSpec(416, "The requested range is not satisfiable."),
    "InvalidRequest": ErrorSpec(400, "Invalid request."),
    "InvalidURI": ErrorSpec(400, "Couldn't parse the specified URI."),
    "KeyTooLongError": ErrorSpec(400, "Your key is too long."),
    "MalformedXML": ErrorSpec(400, "The XML you provided was not well-formed or did not validate against our schema."),
    "MetadataTooLarge": ErrorSpec(400, "Your metadata headers exceed the maximum allowed metadata size."),
    "MethodNotAllowed": ErrorSpec(405, "The specified method is not allowed against this resource."),
    "MissingContentLength": ErrorSpec(411, "You must provide the Content-Length HTTP header."),
    "NoSuchBucket": ErrorSpec(404, "The specified bucket does not exist."),
    "NoSuchKey": ErrorSpec(404, "The specified key does not exist."),
    "NoSuchUpload": ErrorSpec(404, "The specified multipart upload does not exist."),
    "NotImplemented": ErrorSpec(501, "A header or query you provided implies functionality that is not implemented."),
    "OperationAborted": ErrorSpec(409, "A conflicting operation is in progress on this object; try again."),
    "PreconditionFailed": ErrorSpec(412, "At least one of the preconditions you specified did not hold."),
    "RequestTimeTooSkewed": ErrorSpec(
        403, "The difference between the request time and the server's time is too large."
    ),
    "ServiceUnavailable": ErrorSpec(503, "Please reduce your request rate, or try again when the servers are back."),
    "SignatureDoesNotMatch": ErrorSpec(
        403, "The request signature we calculated does not match the signature you provided; check your secret key."
    ),
    "XAmzContentSHA256Mismatch": ErrorSpec(
        400, "The provided 'x-amz-content-sha256' header does not match what was computed."
    ),
}


class S3Error(Exception):
    """An error answered to an S3 client: ``code`` from ``S3_ERRORS``, its ``status``, and a ``message``."""

    def __init__(self, code: str, message: str | None = None) -> None:
        spec = S3_ERRORS[code]
        super().__init__(message or spec.message)
        self.code = code
        self.status = spec.status

    @property
    def message(self) -> str:
        return str(self.args[0])

    def __repr__(self) -> str:
        return f"S3Error({self.code!r}, {self.message!r})"
