"""notary-server's error responses: codes, statuses, fixed messages, body bytes.

Bodies are docker-distribution style, written as Go's JSON encoder writes them
(struct order ``code``, ``message``, ``detail``; ``detail`` omitted when there is
none; a trailing newline), because the notary client parses them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_MESSAGES = {
    "METADATA_NOT_FOUND": (404, "You have requested metadata that does not exist."),
    "GENERIC_NOT_FOUND": (404, "You have requested a resource that does not exist."),
    "INVALID_UPDATE": (400, "Update sent by the client is invalid."),
    "VERSION": (400, "A newer version of metadata is already available."),
    "MALFORMED_UPLOAD": (400, "The body of your request is malformed."),
    "MALFORMED_JSON": (400, "JSON sent by the client could not be parsed by the server"),
    "NO_FILENAME": (400, "No file/role name provided."),
    "INVALID_ROLE": (400, "The role you are attempting to operate on is invalid."),
    "INVALID_GUN": (400, "The server does not support actions on images of this name."),
    "INVALID_PARAMETERS": (400, "The parameters provided are not valid."),
    "UPDATING": (500, "An error has occurred while updating the TUF repository."),
    "UNKNOWN": (500, "unknown error"),
    "UNAVAILABLE": (503, "service unavailable"),
    "TOO_LARGE": (413, "The body of your request is too large."),
    "UNSUPPORTED": (405, "The operation is unsupported."),
}

_ABSENT = object()


@dataclass(frozen=True)
class APIError(Exception):
    """An error response; ``detail`` is any JSON value, or absent."""

    code: str
    detail: Any = _ABSENT

    @property
    def status(self) -> int:
        return _MESSAGES[self.code][0]

    @property
    def message(self) -> str:
        return _MESSAGES[self.code][1]

    def body(self) -> bytes:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not _ABSENT:
            error["detail"] = self.detail
        text = json.dumps({"errors": [error]}, separators=(",", ":"), ensure_ascii=False)
        # Go's encoder escapes HTML characters; outside strings JSON has none
        for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            text = text.replace(raw, escaped)
        return (text + "\n").encode()

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def validation_detail(name: str, message: str, missing: str | None = None) -> dict[str, Any]:
    """notary's ``SerializableError``: ``{"Name": ..., "Error": {...}}``."""
    error: dict[str, Any] = {"Msg": message}
    if missing is not None:
        error = {"Missing": missing, "Msg": message}
    return {"Name": name, "Error": error}


class ValidationFailure(Exception):
    """An update that fails TUF validation, with notary's error type name."""

    def __init__(self, name: str, message: str, missing: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.missing = missing

    def api_error(self) -> APIError:
        return APIError("INVALID_UPDATE", validation_detail(self.name, self.message, self.missing))


def bad_root(message: str) -> ValidationFailure:
    return ValidationFailure("ErrBadRoot", message)


def bad_targets(message: str) -> ValidationFailure:
    return ValidationFailure("ErrBadTargets", message)


def bad_snapshot(message: str) -> ValidationFailure:
    return ValidationFailure("ErrBadSnapshot", message)


def bad_hierarchy(missing: str, message: str) -> ValidationFailure:
    return ValidationFailure("ErrBadHierarchy", message, missing)


def invalid(message: str) -> ValidationFailure:
    return ValidationFailure("ErrValidation", message)
