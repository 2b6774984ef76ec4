"""A repository on an in-process trust server, owned by the test (root and targets keys).

The server holds the timestamp key and, unless ``client_snapshot``, the snapshot key.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from asgi import call

from countersign.server.app import TrustServer
from countersign.tuf import (
    ROOT,
    SNAPSHOT,
    TARGETS,
    TIMESTAMP,
    FileMeta,
    Metadata,
    PrivateKey,
    PublicKey,
    Role,
    new_root,
    new_targets,
    root_certificate_key,
)

GUN = "registry.example.com:5000/team/app"
BOUNDARY = "b0undary"


def _multipart(files: dict[str, bytes]) -> tuple[bytes, dict[str, str]]:
    body = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{role}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        for role, data in files.items()) + f"--{BOUNDARY}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def _post(app: TrustServer, files: dict[str, bytes], gun: str = GUN) -> tuple[int, Any]:
    body, headers = _multipart(files)
    status, _, answer = call(app, "POST", f"/v2/{gun}/_trust/tuf/", body, headers)
    return status, json.loads(answer) if answer else None


def _get(app: TrustServer, name: str, gun: str = GUN) -> tuple[int, bytes]:
    status, _, body = call(app, "GET", f"/v2/{gun}/_trust/tuf/{name}")
    return status, body


class Repo:
    """A repository whose owner holds root and targets keys; the server holds the rest."""

    def __init__(self, app: TrustServer, gun: str = GUN, *, client_snapshot: bool = False):
        self.app, self.gun = app, gun
        self.root_key, self.targets_key = PrivateKey.generate(), PrivateKey.generate()
        self.snapshot_key = PrivateKey.generate() if client_snapshot else None
        self.root_public = root_certificate_key(self.root_key, gun)
        timestamp = self.server_key(TIMESTAMP)
        snapshot = self.snapshot_key.public_key if self.snapshot_key else self.server_key(
            SNAPSHOT)
        keys = [self.root_public, self.targets_key.public_key, snapshot, timestamp]
        roles = {name: Role((key.key_id,)) for name, key in zip(
            (ROOT, TARGETS, SNAPSHOT, TIMESTAMP), keys, strict=True)}
        self.root = new_root({k.key_id: k for k in keys}, roles).sign(
            self.root_key, self.root_public)
        self.targets = new_targets().sign(self.targets_key, self.targets_key.public_key)

    def server_key(self, role: str) -> PublicKey:
        status, body = _get(self.app, f"{role}.key", self.gun)
        assert status == 200, body
        return PublicKey.from_dict(json.loads(body))

    def files(self, *roles: str) -> dict[str, bytes]:
        out = {ROOT: self.root.to_bytes(), TARGETS: self.targets.to_bytes()}
        return {r: out[r] for r in roles}

    def publish(self, *roles: str) -> tuple[int, Any]:
        return _post(self.app, self.files(*roles), self.gun)

    def add_target(self, name: str, data: bytes) -> None:
        entries = dict(self.targets.signed.targets)
        entries[name] = FileMeta.for_bytes(data, algorithms=("sha256",))
        self.targets = Metadata(replace(self.targets.signed.bump(role=TARGETS),
                                        targets=entries)).sign(
            self.targets_key, self.targets_key.public_key)

    def served(self) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        for role in (ROOT, TARGETS, SNAPSHOT, TIMESTAMP):
            status, files[role] = _get(self.app, f"{role}.json", self.gun)
            assert status == 200, (role, files[role])
        return files
