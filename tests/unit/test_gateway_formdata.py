"""The multipart/form-data parser, sans-I/O. Invariant: fed any bytes in any split, it yields the same events, and
what it cannot accept raises FormError, never anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dfsd.gateway.formdata import FormError, FormParser, PartData, PartEnded, PartStarted, boundary_of

BOUNDARY = "----dfsdBoundary7MA4YWxkTrZu0gW"


def form(*parts: tuple[str, str | None, bytes]) -> bytes:
    """An independent encoder: each (field, filename, data) as a part."""
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def parse(body: bytes, step: int) -> list[tuple[str, str | None, bytes]]:
    parser = FormParser(BOUNDARY)
    parts: list[tuple[str, str | None, bytes]] = []
    current: list[object] = []
    for start in range(0, len(body), step):
        for event in parser.feed(body[start : start + step]):
            if isinstance(event, PartStarted):
                current = [event.name, event.filename, b""]
            elif isinstance(event, PartData):
                current[2] += event.data  # type: ignore[operator]
            elif isinstance(event, PartEnded):
                parts.append(tuple(current))  # type: ignore[arg-type]
    parser.close()
    return parts


def test_boundary_of_content_type() -> None:
    assert boundary_of(f"multipart/form-data; boundary={BOUNDARY}") == BOUNDARY
    assert boundary_of(f'multipart/form-data; boundary="{BOUNDARY}"') == BOUNDARY
    with pytest.raises(FormError):
        boundary_of("multipart/form-data")


@given(
    st.lists(
        st.tuples(st.sampled_from(["filename", "file", "x"]), st.none() | st.just("a.bin"), st.binary()), max_size=4
    ),
    st.integers(1, 64),
)
def test_any_split_yields_the_same_parts(parts: list[tuple[str, str | None, bytes]], step: int) -> None:
    body = form(*parts)
    assert parse(body, step) == parts


@given(st.binary(max_size=300), st.integers(1, 40))
def test_any_bytes_parse_or_raise_form_error(body: bytes, step: int) -> None:
    try:
        parse(body, step)
    except FormError:
        pass


def test_body_cut_before_the_final_boundary_is_refused() -> None:
    with pytest.raises(FormError):
        parse(form(("file", None, b"data"))[:-10], 7)
