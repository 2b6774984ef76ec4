"""Fuzzing the HTTP API from its OpenAPI description (schemathesis), in-process.

Every operation of docs/openapi.yaml gets generated requests (valid and
invalid path parameters, queries and bodies); none may be answered with a 5xx.
``max_examples`` below is per operation: 12 operations, 1,200 cases in all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import schemathesis
from asgi import call
from hypothesis import HealthCheck, settings

from countersign.server.app import TrustServer

SCHEMA = schemathesis.openapi.from_path(
    str(Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"))
EXAMPLES_PER_OPERATION = 100


def _body(case: Any) -> tuple[bytes, dict[str, str]]:
    body = case.body
    if body is None or type(body).__name__ == "NotSet":
        return b"", {}
    if isinstance(body, bytes):
        return body, {"Content-Type": case.media_type or "application/octet-stream"}
    if isinstance(body, dict) and case.media_type == "multipart/form-data":
        boundary = "fuzzboundary"
        parts = []
        for name, value in body.items():
            values = value if isinstance(value, list) else [value]
            for item in values:
                data = item if isinstance(item, bytes) else str(item).encode()
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                             f'filename="{name}"\r\n\r\n'.encode() + data + b"\r\n")
        return (b"".join(parts) + f"--{boundary}--\r\n".encode(),
                {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    return str(body).encode(), {"Content-Type": case.media_type or "text/plain"}


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_operation_answers_with_a_5xx(case: Any, trust_app: TrustServer) -> None:
    body, headers = _body(case)
    query = urlencode(case.query or {}, doseq=True).encode()
    status, _, answer = call(trust_app, case.method.upper(), case.formatted_path, body,
                             headers, query)
    assert status < 500, (case.method, case.formatted_path, case.query, answer[:300])
