"""The original project's REST API on the gateway's port, through urllib and curl: uploads as a raw body, a
multipart file, a base64 form field and an urlencoded form; downloads raw, ranged and as base64 JSON; deletes; errors
as JSON with the original codes; HTTP Basic authentication."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from gateway_live import ALICE, LiveGateway


def basic(user: Any = ALICE) -> str:
    return "Basic " + base64.b64encode(f"{user.access_key}:{user.secret_key}".encode()).decode()


def call(
    live_gateway: LiveGateway, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        live_gateway.endpoint + path, data=body, method=method, headers={"authorization": basic(), **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def unique(name: str) -> str:
    return f"rest-{uuid.uuid4().hex[:8]}-{name}"


def test_raw_upload_download_range_base64_and_delete(live_gateway: LiveGateway) -> None:
    name, data = unique("raw.bin"), os.urandom(200_000)
    status, _, body = call(live_gateway, "POST", f"/file?filename={name}", data, {"content-type": "application/x"})
    assert status == 200
    assert json.loads(body)["filename"] == name and len(json.loads(body)["id"]) == 64
    assert call(live_gateway, "GET", f"/file/{name}")[2] == data
    status, headers, ranged = call(live_gateway, "GET", f"/file/{name}", headers={"range": "bytes=10-19"})
    assert status == 206 and ranged == data[10:20] and headers["content-range"] == f"bytes 10-19/{len(data)}"
    status, _, encoded = call(live_gateway, "GET", f"/file/{name}?base64=1")
    assert status == 200 and json.loads(encoded) == {"filename": name, "file": base64.b64encode(data).decode()}
    status, _, body = call(live_gateway, "POST", f"/file?filename={name}", b"again", {"content-type": "application/x"})
    assert status == 409 and json.loads(body)["code"] == 3
    assert call(live_gateway, "DELETE", f"/file/{name}")[0] == 200
    status, _, body = call(live_gateway, "GET", f"/file/{name}")
    assert status == 404 and json.loads(body)["code"] == 2


def test_urlencoded_form_with_base64_file(live_gateway: LiveGateway) -> None:
    name = unique("form.txt")
    form = urllib.parse.urlencode({"filename": name, "file": base64.b64encode(b"hello from a form").decode()})
    status, _, body = call(
        live_gateway, "POST", "/file", form.encode(), {"content-type": "application/x-www-form-urlencoded"}
    )
    assert status == 200, body
    assert call(live_gateway, "GET", f"/file/{name}")[2] == b"hello from a form"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_multipart_file_field_and_base64_field_by_curl(live_gateway: LiveGateway, tmp_path: Path) -> None:
    source = tmp_path / "upload.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    credentials = f"{ALICE.access_key}:{ALICE.secret_key}"
    named = unique("curl.bin")
    for fields, name in (
        (["-F", f"filename={named}", "-F", f"file=@{source}"], named),
        (["-F", f"file=@{source};filename=" + (streamed := unique("own-name.bin"))], streamed),
        (
            ["-F", f"filename={(b64 := unique('b64.txt'))}", "-F", "file=" + base64.b64encode(b"base64 text").decode()],
            b64,
        ),
    ):
        result = subprocess.run(
            ["curl", "-sS", "-u", credentials, *fields, live_gateway.endpoint + "/file"],
            capture_output=True,
            timeout=60,
            check=True,
        )
        assert json.loads(result.stdout)["filename"] == name, result.stdout
    assert call(live_gateway, "GET", f"/file/{named}")[2] == source.read_bytes()
    assert call(live_gateway, "GET", f"/file/{streamed}")[2] == source.read_bytes()
    assert call(live_gateway, "GET", f"/file/{b64}")[2] == b"base64 text"


def test_rest_names_are_dfsd_names_so_s3_objects_are_reachable(live_gateway: LiveGateway) -> None:
    s3, bucket = live_gateway.s3(), live_gateway.bucket()
    s3.put_object(Bucket=bucket, Key="dir/obj", Body=b"via s3")
    assert call(live_gateway, "GET", f"/file/{bucket}/dir/obj")[2] == b"via s3"


def test_no_or_wrong_credentials_are_401(live_gateway: LiveGateway) -> None:
    for header in ({}, {"authorization": "Basic " + base64.b64encode(f"{ALICE.access_key}:wrong".encode()).decode()}):
        request = urllib.request.Request(live_gateway.endpoint + "/file/anything", headers=header)
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            urllib.request.urlopen(request, timeout=30)
        assert excinfo.value.code == 401
        assert json.loads(excinfo.value.read())["code"] == 9
