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

from countersign.tuf import (
    ROOT,
    SNAPSHOT,
    TARGETS,
    TIMESTAMP,
    DelegatedRole,
    Delegations,
    FileMeta,
    Metadata,
    PrivateKey,
    PublicKey,
    Role,
    Snapshot,
    Timestamp,
    new_root,
    new_snapshot,
    new_targets,
    root_certificate_key,
)


class WithToken:
    """A server seen through a bearer token: every request made with it carries the token."""

    def __init__(self, server: ReferenceNotary, token: str) -> None:
        self.url = server.url
        self.ca_path = server.ca_path
        self.authorization = f"Bearer {token}"

    def get_tuf(self, gun: str, role: str, *, sha256: str | None = None,
                version: int | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        from _notary import tuf_path

        return request(self, "GET", tuf_path(gun, role, sha256=sha256,  # type: ignore[arg-type]
                                             version=version))


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
    body, headers = multipart(files, boundary=uuid.uuid4().hex)
    return _request(server, "POST", f"/v2/{gun}/_trust/tuf/", body, headers)


def server_key(server: ReferenceNotary, gun: str, role: str) -> dict[str, object]:
    status, body = _request(server, "GET", f"/v2/{gun}/_trust/tuf/{role}.key", b"", {})
    assert status == 200, f"{role}.key: HTTP {status} {body[:200]!r}"
    parsed = json.loads(body)
    assert isinstance(parsed, dict)
    return parsed


def _request(server: ReferenceNotary, method: str, path: str, body: bytes,
             headers: Mapping[str, str]) -> tuple[int, bytes]:
    status, _, data = request(server, method, path, body, headers)
    return status, data


def request(server: ReferenceNotary, method: str, path: str, body: bytes = b"",
            headers: Mapping[str, str] | None = None
            ) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One HTTPS request, trusting only the server's CA; the body read is capped at 16 MiB.

    A server object with an ``authorization`` attribute (see :class:`WithToken`) sends it.
    """
    headers = dict(headers or {})
    token = getattr(server, "authorization", None)
    if token and "Authorization" not in headers:
        headers["Authorization"] = token
    url = urlsplit(server.url)
    context = ssl.create_default_context(cafile=str(Path(server.ca_path)))
    conn = http.client.HTTPSConnection(url.hostname or "127.0.0.1", url.port, context=context,
                                       timeout=20)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.headers, response.read(16 << 20)
    finally:
        conn.close()


def multipart(files: Mapping[str, bytes], *, filename_header: bool = True,
              boundary: str = "countersignboundary") -> tuple[bytes, dict[str, str]]:
    """A multipart body as notary's client builds it (or without filenames, for errors)."""
    parts = []
    for role, data in files.items():
        disposition = (f'form-data; name="files"; filename="{role}"' if filename_header
                       else 'form-data; name="files"')
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def create_repository(server: ReferenceNotary, gun: str, payload: bytes, *,
                      client_snapshot: bool) -> dict[str, PrivateKey]:
    """A new repository made by countersign (root certificate, targets, an RSA
    delegation, optionally a client snapshot), uploaded in one POST; its keys."""
    root_key, targets_key = PrivateKey.generate("ecdsa"), PrivateKey.generate("ecdsa")
    releases_key = PrivateKey.generate("rsa", rsa_bits=2048)
    snapshot_key = PrivateKey.generate("ecdsa")
    root_public = root_certificate_key(root_key, gun)
    timestamp_public = PublicKey.from_dict(server_key(server, gun, TIMESTAMP))
    snapshot_public = (snapshot_key.public_key if client_snapshot
                       else PublicKey.from_dict(server_key(server, gun, SNAPSHOT)))
    keys = {k.key_id: k for k in (root_public, targets_key.public_key, snapshot_public,
                                  timestamp_public)}
    roles = {ROOT: Role((root_public.key_id,)), TARGETS: Role((targets_key.public_key.key_id,)),
             SNAPSHOT: Role((snapshot_public.key_id,)),
             TIMESTAMP: Role((timestamp_public.key_id,))}
    root = new_root(keys, roles).sign(root_key, root_public)

    digest = FileMeta.for_bytes(payload, algorithms=("sha256",))
    delegation = DelegatedRole("targets/releases", (releases_key.public_key.key_id,), 1, ("",))
    targets = new_targets(
        targets={"latest": digest},
        delegations=Delegations({releases_key.public_key.key_id: releases_key.public_key},
                                (delegation,)),
    ).sign(targets_key, targets_key.public_key)
    releases = new_targets(targets={"v1.0": digest, "odd<&>name": digest}).sign(
        releases_key, releases_key.public_key)

    files = {ROOT: root.to_bytes(), TARGETS: targets.to_bytes(),
             "targets/releases": releases.to_bytes()}
    if client_snapshot:
        snapshot = new_snapshot({ROOT: root.file_meta(), TARGETS: targets.file_meta(),
                                 "targets/releases": releases.file_meta()})
        files[SNAPSHOT] = snapshot.sign(snapshot_key, snapshot_key.public_key).to_bytes()
    status, body = post_update(server, gun, files)
    assert status == 200, f"reference server refused the upload: {status} {body!r}"
    return {ROOT: root_key, TARGETS: targets_key, "targets/releases": releases_key,
            SNAPSHOT: snapshot_key}
