"""Notary's HTTP API, client side: paths, size caps and what each status means.

Status handling follows the notary client: 200 is success; 404 is "not found"
(for root: the repository has no trust data); 400 carries notary's error body
(read at most 1 KiB); 401 means credentials; anything else is "server
unavailable", which for the timestamp lets the client fall back to its cache.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

from countersign.client.fetcher import Fetcher, Response
from countersign.errors import (
    AuthenticationError,
    NotFoundError,
    ServerRejectedError,
    ServerUnavailableError,
)
from countersign.tuf import PublicKey
from countersign.tuf.canonical import parse_json

#: notary's caps: the timestamp, a root fetched without a known hash, key bodies
MAX_TIMESTAMP = 1 << 20
MAX_ROOT = 100 << 20
MAX_KEY = 256 << 10
MAX_ERROR = 1 << 10


class NotaryRemote:
    """One GUN's trust data on one server."""

    def __init__(self, fetcher: Fetcher, gun: str) -> None:
        self.fetcher = fetcher
        self.gun = gun
        self._base = f"/v2/{gun}/_trust/tuf/"

    @property
    def server(self) -> str:
        return self.fetcher.base_url

    def _check(self, response: Response, what: str) -> bytes:
        status = response.status
        if status == 200:
            return response.body
        if status == 404:
            raise NotFoundError(f"{self.server} has no {what} for {self.gun}")
        if status == 401:
            raise AuthenticationError(
                f"{self.server} requires authentication for {self.gun}",
                advice="log in to the registry (docker login) or set NOTARY_AUTH")
        if status == 400:
            raise _rejected(response.body[:MAX_ERROR], what)
        raise ServerUnavailableError(f"{self.server} answered HTTP {status} for {what}")

    def metadata(self, role: str, *, max_length: int, checksum: str | None = None,
                 version: int | None = None) -> bytes:
        """A role's file: current, by sha256 hex, or by version; at most ``max_length``."""
        if checksum is not None:
            name = f"{role}.{checksum}.json"
        elif version is not None:
            name = f"{version}.{role}.json"
        else:
            name = f"{role}.json"
        response = self.fetcher.get(self._base + name, max_length=max_length)
        return self._check(response, name)

    def server_key(self, role: str, *, rotate: bool = False) -> PublicKey:
        """The server's timestamp or snapshot key; ``rotate`` makes a new one."""
        path = f"{self._base}{role}.key"
        if rotate:
            response = self.fetcher.request("POST", path, max_length=MAX_KEY)
        else:
            response = self.fetcher.get(path, max_length=MAX_KEY)
        body = self._check(response, f"{role}.key")
        try:
            return PublicKey.from_dict(parse_json(body, what=f"{role}.key"))
        except Exception as exc:
            raise ServerUnavailableError(
                f"{self.server} sent an unusable {role} key: {exc}") from None

    def publish(self, files: Mapping[str, bytes]) -> None:
        """One multipart POST of every changed role (filename = role name, as notary)."""
        boundary = uuid.uuid4().hex
        body = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="{role}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + data + b"\r\n" for role, data in files.items()
        ) + f"--{boundary}--\r\n".encode()
        response = self.fetcher.request(
            "POST", self._base, body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            max_length=MAX_ERROR)
        self._check(response, "update")

    def delete(self) -> None:
        self._check(self.fetcher.request("DELETE", self._base, max_length=MAX_ERROR),
                    "repository")


def _rejected(body: bytes, what: str) -> ServerRejectedError:
    code, detail, message = "", None, "the trust server rejected the operation"
    try:
        errors = json.loads(body)["errors"]
        if isinstance(errors, list) and len(errors) == 1 and isinstance(errors[0], dict):
            code = str(errors[0].get("code", ""))
            detail = errors[0].get("detail")
            if code == "VERSION":
                message = "the trust server already has a newer version"
            elif isinstance(detail, dict) and isinstance(detail.get("Error"), dict):
                message = f"{detail.get('Name', code)}: {detail['Error'].get('Msg', '')}"
            else:
                message = str(errors[0].get("message", message))
    except (ValueError, KeyError, TypeError):
        pass
    return ServerRejectedError(f"{what}: {message}", code=code, detail=detail,
                               advice="fetch the current state and try again"
                               if code == "VERSION" else None)
