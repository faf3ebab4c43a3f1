"""The aws-chunked decoder: AWS's published chunked-upload example, botocore's own aws-chunked bodies, and fuzzing.

Fuzz invariant: whatever bytes arrive, the decoder either hands out payload bytes or raises ``S3Error`` (never another
exception), never buffers a line over ``MAX_CHUNK_LINE``, and gives the same result fed whole or one byte at a time.
Test bodies are built by the small encoder below, written from AWS's documentation and checked against AWS's
published signatures, independent of the decoder's own signing code.
"""

from __future__ import annotations

import base64
import hashlib
import zlib

import pytest
from aws_chunked import (
    AWS_CHUNK_SIGNATURES,
    AWS_DATE,
    AWS_SCOPE,
    AWS_SECRET,
    AWS_SEED,
    aws_signing_key,
    chunk_signatures,
    encode_signed,
    encode_unsigned,
    split,
)
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha1Checksum, Sha256Checksum
from gateway_clients import SECRETS, CapturingClient, signed_at
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dfsd.gateway.checksums import crc32c, crc32c_table_driven
from dfsd.gateway.chunked import MAX_CHUNK_LINE, AwsChunkedDecoder
from dfsd.gateway.errors import S3Error
from dfsd.gateway.sigv4 import ChunkSigning, PayloadMode, SignedRequest, verify

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def aws_signing() -> ChunkSigning:
    return ChunkSigning(aws_signing_key(), AWS_DATE, AWS_SCOPE, AWS_SEED)


def decode(decoder: AwsChunkedDecoder, body: bytes, step: int | None = None) -> bytes:
    """Feed ``body`` whole (``step`` None) or in pieces of ``step`` bytes, then close; return the payload."""
    out = bytearray()
    pieces = [body] if step is None else [body[i : i + step] for i in range(0, len(body), step)]
    for piece in pieces:
        for data in decoder.feed(piece):
            out += data
    decoder.close()
    return bytes(out)


def expect_error(code: str, decoder: AwsChunkedDecoder, body: bytes) -> S3Error:
    with pytest.raises(S3Error) as caught:
        decode(decoder, body)
    assert caught.value.code == code, caught.value
    return caught.value


# --- AWS's published example ("Transferring Payload in Multiple Chunks", PUT Object) ----------------------------------

AWS_CHUNKS = [b"a" * 65536, b"a" * 1024, b""]
AWS_BODY = encode_signed(AWS_CHUNKS, AWS_CHUNK_SIGNATURES)


def test_independent_encoder_reproduces_aws_published_chunk_signatures() -> None:
    assert chunk_signatures(AWS_CHUNKS, aws_signing_key(), AWS_SEED) == AWS_CHUNK_SIGNATURES
    assert len(AWS_BODY) == 66824  # the example's Content-Length


def test_aws_example_seed_signature_verifies() -> None:
    request = SignedRequest(
        "PUT",
        "/examplebucket/chunkObject.txt",
        "",
        [
            ("Host", "s3.amazonaws.com"),
            ("x-amz-date", AWS_DATE),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders="
                "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
                f"x-amz-storage-class,Signature={AWS_SEED}",
            ),
            ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
            ("Content-Encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "66560"),
            ("Content-Length", "66824"),
        ],
    )
    authorised = verify(request, {"AKIAIOSFODNN7EXAMPLE": AWS_SECRET}, 1369353600.0)
    assert authorised.payload is PayloadMode.STREAMING_SIGNED
    assert authorised.chunk_signing == aws_signing()
    decoder = AwsChunkedDecoder(decoded_length=66560, signing=authorised.chunk_signing)
    assert decode(decoder, AWS_BODY) == b"a" * 66560
    assert decoder.done


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_aws_example_decodes_in_any_split(step: int) -> None:
    assert decode(AwsChunkedDecoder(decoded_length=66560, signing=aws_signing()), AWS_BODY, step) == b"a" * 66560


def test_chunk_signatures_out_of_order_are_refused() -> None:
    swapped = [AWS_CHUNK_SIGNATURES[1], AWS_CHUNK_SIGNATURES[0], AWS_CHUNK_SIGNATURES[2]]
    expect_error(
        "SignatureDoesNotMatch",
        AwsChunkedDecoder(decoded_length=None, signing=aws_signing()),
        encode_signed(AWS_CHUNKS, swapped),
    )


def test_altered_chunk_data_is_refused() -> None:
    body = AWS_BODY.replace(b"a" * 1024, b"a" * 1023 + b"b")
    expect_error("SignatureDoesNotMatch", AwsChunkedDecoder(decoded_length=66560, signing=aws_signing()), body)


def test_dropped_final_chunk_is_incomplete() -> None:
    body = encode_signed(AWS_CHUNKS[:2], AWS_CHUNK_SIGNATURES[:2])
    expect_error("IncompleteBody", AwsChunkedDecoder(decoded_length=66560, signing=aws_signing()), body)


def test_replayed_chunk_is_refused() -> None:
    chunks = [AWS_CHUNKS[0], AWS_CHUNKS[0], b""]
    signatures = [AWS_CHUNK_SIGNATURES[0], AWS_CHUNK_SIGNATURES[0], AWS_CHUNK_SIGNATURES[2]]
    expect_error(
        "SignatureDoesNotMatch",
        AwsChunkedDecoder(decoded_length=None, signing=aws_signing()),
        encode_signed(chunks, signatures),
    )


def test_unsigned_chunk_in_signed_mode_is_refused() -> None:
    body = encode_unsigned([b"abc"], None)
    expect_error("SignatureDoesNotMatch", AwsChunkedDecoder(decoded_length=3, signing=aws_signing()), body)


def test_signed_chunk_in_unsigned_mode_is_refused() -> None:
    expect_error("SignatureDoesNotMatch", AwsChunkedDecoder(decoded_length=66560), AWS_BODY)


# --- botocore's own aws-chunked bodies (STREAMING-UNSIGNED-PAYLOAD-TRAILER) -------------------------------------------

BOTOCORE_CHECKSUMS = {
    "x-amz-checksum-crc32": Crc32Checksum,
    "x-amz-checksum-sha1": Sha1Checksum,
    "x-amz-checksum-sha256": Sha256Checksum,
}


@pytest.mark.parametrize("name", sorted(BOTOCORE_CHECKSUMS))
@pytest.mark.parametrize("size", [0, 1, 1024 * 1024, 2 * 1024 * 1024 + 5])
def test_botocore_aws_chunked_wrapper_body(name: str, size: int) -> None:
    import io

    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    body = AwsChunkedWrapper(io.BytesIO(payload), checksum_cls=BOTOCORE_CHECKSUMS[name], checksum_name=name).read()
    assert decode(AwsChunkedDecoder(decoded_length=size, trailer=name), body, step=65521) == payload


@pytest.mark.parametrize("algorithm", ["CRC32", "SHA1", "SHA256"])
def test_boto3_https_put_object_end_to_end(algorithm: str) -> None:
    client = CapturingClient(endpoint="https://127.0.0.1:9443")
    payload = b"the quick brown fox " * 5000
    client.client.put_object(Bucket="bucket", Key="fox.txt", Body=payload, ChecksumAlgorithm=algorithm)
    request, body = client.last()

    authorised = verify(request, SECRETS, signed_at(request))
    assert authorised.payload is PayloadMode.STREAMING_UNSIGNED_TRAILER
    decoded_length = request.header("x-amz-decoded-content-length")
    decoder = AwsChunkedDecoder(
        decoded_length=int(decoded_length) if decoded_length else None, trailer=request.header("x-amz-trailer")
    )
    assert decode(decoder, body) == payload


def test_wrong_trailer_checksum_is_bad_digest() -> None:
    body = encode_unsigned([b"hello"], ("x-amz-checksum-crc32", base64.b64encode(b"\0\0\0\0").decode()))
    expect_error("BadDigest", AwsChunkedDecoder(decoded_length=5, trailer="x-amz-checksum-crc32"), body)


def test_malformed_trailer_checksum_is_invalid_digest() -> None:
    body = encode_unsigned([b"hello"], ("x-amz-checksum-sha256", "not base64!"))
    expect_error("InvalidDigest", AwsChunkedDecoder(decoded_length=5, trailer="x-amz-checksum-sha256"), body)


@pytest.mark.parametrize("step", [None, 1])
def test_a_deferred_sha256_trailer_is_handed_out_unchecked_and_still_validated(step: int | None) -> None:
    """``defer_sha256``: a SHA-256 trailer, right or wrong, is handed out for the storage node to check (nothing here
    hashes the payload with SHA-256); one that is not a SHA-256's base64 is still InvalidDigest; another algorithm is
    still checked here."""
    wrong = hashlib.sha256(b"other bytes").digest()
    body = encode_unsigned([b"hel", b"lo"], ("x-amz-checksum-sha256", base64.b64encode(wrong).decode()))
    decoder = AwsChunkedDecoder(decoded_length=5, trailer="x-amz-checksum-sha256", defer_sha256=True)
    assert decoder.defers_sha256 and decoder.trailer_sha256 is None
    assert decode(decoder, body, step=step) == b"hello"
    assert decoder.trailer_sha256 == wrong
    malformed = encode_unsigned([b"hello"], ("x-amz-checksum-sha256", "not base64!"))
    expect_error(
        "InvalidDigest",
        AwsChunkedDecoder(decoded_length=5, trailer="x-amz-checksum-sha256", defer_sha256=True),
        malformed,
    )
    crc = encode_unsigned([b"hello"], ("x-amz-checksum-crc32", base64.b64encode(b"\0\0\0\0").decode()))
    deferring = AwsChunkedDecoder(decoded_length=5, trailer="x-amz-checksum-crc32", defer_sha256=True)
    assert not deferring.defers_sha256
    expect_error("BadDigest", deferring, crc)


def test_crc32c_trailer() -> None:
    payload = b"123456789" * 1000
    value = base64.b64encode(crc32c(payload).to_bytes(4, "big")).decode()
    body = encode_unsigned([payload[:5000], payload[5000:]], ("x-amz-checksum-crc32c", value))
    assert decode(AwsChunkedDecoder(decoded_length=len(payload), trailer="x-amz-checksum-crc32c"), body) == payload


def test_crc32c_known_answers() -> None:
    # RFC 3720 (iSCSI) appendix B.4 and the standard check value.
    assert crc32c_table_driven(b"123456789") == 0xE3069283
    assert crc32c_table_driven(bytes(32)) == 0x8A9136AA
    assert crc32c_table_driven(b"\xff" * 32) == 0x62A8AB43
    assert crc32c_table_driven(bytes(range(32))) == 0x46DD794E
    assert crc32c_table_driven(b"6789", crc32c_table_driven(b"12345")) == 0xE3069283
    assert crc32c(b"123456789") == 0xE3069283


def test_missing_announced_trailer_is_refused() -> None:
    expect_error(
        "InvalidRequest",
        AwsChunkedDecoder(decoded_length=5, trailer="x-amz-checksum-crc32"),
        encode_unsigned([b"hello"], None),
    )


def test_unannounced_trailer_is_refused() -> None:
    crc = base64.b64encode(zlib.crc32(b"hello").to_bytes(4, "big")).decode()
    expect_error(
        "InvalidRequest",
        AwsChunkedDecoder(decoded_length=5),
        encode_unsigned([b"hello"], ("x-amz-checksum-crc32", crc)),
    )


def test_trailer_that_is_not_a_checksum_is_refused() -> None:
    with pytest.raises(S3Error) as caught:
        AwsChunkedDecoder(decoded_length=None, trailer="x-amz-meta-colour")
    assert caught.value.code == "InvalidRequest"


# --- hostile framing --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"zz\r\nab\r\n0\r\n\r\n", "InvalidRequest"),  # bad hex
        (b"-1\r\n", "InvalidRequest"),
        (b"2\nab\r\n0\r\n\r\n", "InvalidRequest"),  # bare LF
        (b"2\r\nabX\n0\r\n\r\n", "InvalidRequest"),  # no CRLF after data
        (b"2;foo=bar\r\nab\r\n0\r\n\r\n", "InvalidRequest"),  # unknown extension
        (b"11111111111111111\r\n", "InvalidRequest"),  # 17 hex digits
        (b"2\r\nab\r\n", "IncompleteBody"),  # no final chunk
        (b"2\r\nab\r\n0\r\n", "IncompleteBody"),  # no final CRLF
        (b"2\r\nab\r\n0\r\n\r\nextra", "IncompleteBody"),  # bytes after the end
        (b"3\r\nabc\r\n0\r\n\r\n", "IncompleteBody"),  # more than decoded length
        (b"1\r\na\r\n0\r\n\r\n", "IncompleteBody"),  # less than decoded length
        (b"", "IncompleteBody"),
    ],
)
def test_malformed_bodies(body: bytes, code: str) -> None:
    expect_error(code, AwsChunkedDecoder(decoded_length=2), body)


def test_oversized_chunk_header_line_is_refused_before_it_is_buffered() -> None:
    decoder = AwsChunkedDecoder(decoded_length=None)
    decoder.feed(b"1" * (MAX_CHUNK_LINE - 1))
    with pytest.raises(S3Error) as caught:
        decoder.feed(b"11")
    assert caught.value.code == "InvalidRequest"


def test_endless_trailer_lines_are_refused() -> None:
    decoder = AwsChunkedDecoder(decoded_length=0, trailer="x-amz-checksum-crc32")
    body = b"0\r\n" + b"x-amz-checksum-crc32:AAAAAA==\r\n" * 20
    expect_error("InvalidRequest", decoder, body)


def test_announced_chunk_larger_than_decoded_length_is_refused_at_its_header() -> None:
    decoder = AwsChunkedDecoder(decoded_length=10)
    with pytest.raises(S3Error) as caught:
        decoder.feed(b"ffffffff\r\n")
    assert caught.value.code == "IncompleteBody"


# --- properties -------------------------------------------------------------------------------------------------------


@FUZZ
@given(
    payload=st.binary(max_size=5000),
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=5),
    step=st.integers(1, 700),
)
def test_signed_bodies_decode_alike_in_any_split(payload: bytes, sizes: list[int], step: int) -> None:
    chunks = split(payload, sizes)
    body = encode_signed(chunks, chunk_signatures(chunks, aws_signing_key(), AWS_SEED))
    whole = decode(AwsChunkedDecoder(decoded_length=len(payload), signing=aws_signing()), body)
    pieces = decode(AwsChunkedDecoder(decoded_length=len(payload), signing=aws_signing()), body, step)
    assert whole == pieces == payload


@FUZZ
@given(
    payload=st.binary(max_size=3000),
    sizes=st.lists(st.integers(1, 1000), min_size=1, max_size=5),
    algorithm=st.sampled_from(["crc32", "crc32c", "sha1", "sha256"]),
)
def test_trailer_bodies_decode_byte_by_byte(payload: bytes, sizes: list[int], algorithm: str) -> None:
    from dfsd.gateway.checksums import ChecksumVerifier

    checksum = ChecksumVerifier(algorithm)
    checksum.update(payload)
    name = f"x-amz-checksum-{algorithm}"
    body = encode_unsigned(split(payload, sizes), (name, checksum.b64digest()))
    assert decode(AwsChunkedDecoder(decoded_length=len(payload), trailer=name), body, step=1) == payload


@FUZZ
@given(
    body=st.binary(max_size=300)
    | st.builds(lambda a, b: a + b, st.sampled_from([AWS_BODY[:120], b"5\r\nhello\r\n"]), st.binary(max_size=100)),
    step=st.integers(1, 50),
)
def test_any_bytes_decode_or_raise_s3_error_alike_in_any_split(body: bytes, step: int) -> None:
    def outcome(piece_step: int | None) -> object:
        try:
            return decode(AwsChunkedDecoder(decoded_length=None, signing=None), body, piece_step)
        except S3Error as error:
            return error.code

    assert outcome(None) == outcome(step)


# --- AWS's published example with a signed trailer ("Including Trailing Headers", STREAMING-...-PAYLOAD-TRAILER) ------

AWS_TRAILER_SEED = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
AWS_TRAILER_CHUNK_SIGNATURES = [
    "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
    "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
    "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
]
AWS_TRAILER_SIGNATURE = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"


def signed_trailer_body(trailer_signature: str = AWS_TRAILER_SIGNATURE, crc: str = "sOO8/Q==") -> bytes:
    """The example's body as SDKs frame it: the trailer lines follow the final chunk's header, then one empty line."""
    body = encode_signed(AWS_CHUNKS, AWS_TRAILER_CHUNK_SIGNATURES)
    return (
        body[: -len(b"\r\n")]
        + f"x-amz-checksum-crc32c:{crc}\r\nx-amz-trailer-signature:{trailer_signature}\r\n\r\n".encode()
    )


def test_aws_signed_trailer_example_seed_verifies() -> None:
    request = SignedRequest(
        "PUT",
        "/examplebucket/chunkObject.txt",
        "",
        [
            ("Host", "s3.amazonaws.com"),
            ("x-amz-date", AWS_DATE),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders="
                "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
                f"x-amz-storage-class;x-amz-trailer,Signature={AWS_TRAILER_SEED}",
            ),
            ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
            ("Content-Encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "66560"),
            ("x-amz-trailer", "x-amz-checksum-crc32c"),
        ],
    )
    authorised = verify(request, {"AKIAIOSFODNN7EXAMPLE": AWS_SECRET}, 1369353600.0)
    assert authorised.payload is PayloadMode.STREAMING_SIGNED_TRAILER
    assert authorised.chunk_signing is not None
    assert authorised.chunk_signing.seed_signature == AWS_TRAILER_SEED


def trailer_signing() -> ChunkSigning:
    return ChunkSigning(aws_signing_key(), AWS_DATE, AWS_SCOPE, AWS_TRAILER_SEED)


@pytest.mark.parametrize("step", [None, 1, 4096])
def test_aws_signed_trailer_example_decodes(step: int | None) -> None:
    assert chunk_signatures(AWS_CHUNKS, aws_signing_key(), AWS_TRAILER_SEED) == AWS_TRAILER_CHUNK_SIGNATURES
    decoder = AwsChunkedDecoder(decoded_length=66560, signing=trailer_signing(), trailer="x-amz-checksum-crc32c")
    assert decode(decoder, signed_trailer_body(), step) == b"a" * 66560


def test_wrong_trailer_signature_is_refused() -> None:
    decoder = AwsChunkedDecoder(decoded_length=66560, signing=trailer_signing(), trailer="x-amz-checksum-crc32c")
    expect_error("SignatureDoesNotMatch", decoder, signed_trailer_body(trailer_signature="0" * 64))


def test_missing_trailer_signature_is_refused() -> None:
    decoder = AwsChunkedDecoder(decoded_length=66560, signing=trailer_signing(), trailer="x-amz-checksum-crc32c")
    body = signed_trailer_body().replace(f"x-amz-trailer-signature:{AWS_TRAILER_SIGNATURE}\r\n".encode(), b"")
    expect_error("SignatureDoesNotMatch", decoder, body)


def test_changed_trailer_checksum_breaks_the_trailer_signature() -> None:
    decoder = AwsChunkedDecoder(decoded_length=66560, signing=trailer_signing(), trailer="x-amz-checksum-crc32c")
    expect_error("SignatureDoesNotMatch", decoder, signed_trailer_body(crc="AAAAAA=="))
