"""Raw Notary HTTP for the interoperability tests: walk a repository, post an update.

The trust client proper is countersign's own (``countersign.client``); this is
the minimum to move exact bytes between the reference server and the tests.
"""

from __future__ import annotations

import http.client
import json
import ssl
import uuid
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from _notary import ReferenceNotary

from countersign.tuf import SNAPSHOT, TIMESTAMP, Metadata, Snapshot, Timestamp


def fetch_repository(server: ReferenceNotary, gun: str) -> dict[str, bytes]:
    """Every current file of ``gun``: timestamp, then all by the hashes the snapshot lists."""
    status, _, timestamp = server.get_tuf(gun, TIMESTAMP)
    assert status == 200, f"timestamp of {gun}: HTTP {status}"
    files = {TIMESTAMP: timestamp}
    ts = Metadata.from_bytes(timestamp, Timestamp)
    snap_hash = ts.signed.meta[SNAPSHOT].hashes["sha256"].hex()
    status, _, files[SNAPSHOT] = server.get_tuf(gun, SNAPSHOT, sha256=snap_hash)
    assert status == 200, f"snapshot {snap_hash}: HTTP {status}"
    snapshot = Metadata.from_bytes(files[SNAPSHOT], Snapshot)
    for role, meta in snapshot.signed.meta.items():
        digest = meta.hashes["sha256"].hex()
        status, _, body = server.get_tuf(gun, role, sha256=digest)
        assert status == 200, f"{role} by sha256 {digest}: HTTP {status}"
        files[role] = body
    return files


def post_update(server: ReferenceNotary, gun: str, files: Mapping[str, bytes]) -> tuple[int, bytes]:
    """One multipart POST, each part's filename the role name, as notary's client sends it."""
    boundary = uuid.uuid4().hex
    parts = []
    for role, data in files.items():
        parts.append(
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"{role}\"\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
            + data + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return _request(server, "POST", f"/v2/{gun}/_trust/tuf/", body,
                    {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def server_key(server: ReferenceNotary, gun: str, role: str) -> dict[str, object]:
    status, body = _request(server, "GET", f"/v2/{gun}/_trust/tuf/{role}.key", b"", {})
    assert status == 200, f"{role}.key: HTTP {status} {body[:200]!r}"
    parsed = json.loads(body)
    assert isinstance(parsed, dict)
    return parsed


def _request(server: ReferenceNotary, method: str, path: str, body: bytes,
             headers: Mapping[str, str]) -> tuple[int, bytes]:
    url = urlsplit(server.url)
    context = ssl.create_default_context(cafile=str(Path(server.ca_path)))
    conn = http.client.HTTPSConnection(url.hostname or "127.0.0.1", url.port, context=context,
                                       timeout=20)
    try:
        conn.request(method, path, body=body or None, headers=dict(headers))
        response = conn.getresponse()
        return response.status, response.read(1 << 20)
    finally:
        conn.close()
