"""The real notary 0.7 CLI runs the paper's trust operations against ``countersign serve``.

Each stage delegation has its own key and publishes from its own trust dir,
as separate CI stages would. After every step the repository the server
serves is verified by countersign's own TUF core as well.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _countersign import CountersignServer
from _notary import NotaryCLI, NotaryCLIFactory, make_delegation_key, parse_list_output
from _tufhttp import fetch_repository

from countersign.tuf import Metadata
from countersign.tuf.repository import verify_repository

pytestmark = pytest.mark.interop

STAGES = ("targets/static-tested", "targets/dynamic-tested", "targets/fuzz-tested")


def _verified(server: CountersignServer, gun: str) -> dict[str, bytes]:
    files = fetch_repository(server, gun)  # type: ignore[arg-type]
    for role, data in files.items():
        assert Metadata.from_bytes(data, role=role).to_bytes() == data
    verify_repository(files, gun)
    return files


def test_unknown_repository_is_refused_like_the_reference(
    countersign_server: CountersignServer, notary_cli: NotaryCLIFactory, gun: str,
) -> None:
    cli = notary_cli("reader", server=countersign_server)
    result = cli.run("list", gun)
    assert result.returncode == 1
    host = countersign_server.url.removeprefix("https://")
    assert f"* fatal: {host} does not have trust data for {gun}" in result.stdout


def test_paper_trust_operations(
    countersign_server: CountersignServer, notary_cli: NotaryCLIFactory, gun: str,
    tmp_path: Path,
) -> None:
    admin = notary_cli("admin", server=countersign_server)
    payload = tmp_path / "manifest.json"
    payload.write_bytes(b'{"schemaVersion":2,"layers":[]}')

    admin.run_ok("init", gun)
    admin.run_ok("add", gun, "v1", str(payload))
    admin.run_ok("publish", gun)
    assert set(parse_list_output(admin.run_ok("list", gun).stdout)) == {"v1"}
    _verified(countersign_server, gun)

    # the server takes over the snapshot key, so delegates can publish alone
    admin.run_ok("key", "rotate", gun, "snapshot", "-r")
    stage_clis: dict[str, NotaryCLI] = {}
    for role in ("targets/releases", *STAGES):
        name = role.split("/")[1]
        key = make_delegation_key(tmp_path / "keys", name)
        admin.run_ok("delegation", "add", gun, role, str(key.cert_path), "--all-paths")
        cli = notary_cli(name, server=countersign_server)
        cli.run_ok("key", "import", str(key.key_path), "--role", role)
        stage_clis[role] = cli
    admin.run_ok("publish", gun)
    listed = admin.run_ok("delegation", "list", gun).stdout
    for role in ("targets/releases", *STAGES):
        assert role in listed

    for role, cli in stage_clis.items():
        tag = role.split("/")[1] + "-build-1"
        cli.run_ok("add", gun, tag, str(payload), "-r", role)
        cli.run_ok("publish", gun)
    reader = notary_cli("reader", server=countersign_server)
    everything = parse_list_output(reader.run_ok("list", gun).stdout)
    for role in stage_clis:
        assert everything[role.split("/")[1] + "-build-1"][2] == role
    report_files = _verified(countersign_server, gun)
    report = verify_repository(report_files, gun)
    for role in STAGES:
        assert report.roles[role].signatures.verified

    # witness bumps a delegation's version without changing it
    before = Metadata.from_bytes(report_files["targets/static-tested"]).signed.version
    stage_clis["targets/static-tested"].run_ok("witness", gun, "targets/static-tested", "-p")
    after = Metadata.from_bytes(
        _verified(countersign_server, gun)["targets/static-tested"]).signed.version
    assert after == before + 1

    # snapshot key back to the client, and a timestamp key rotation
    admin.run_ok("key", "rotate", gun, "snapshot")
    admin.run_ok("add", gun, "v2", str(payload))
    admin.run_ok("publish", gun)
    admin.run_ok("key", "rotate", gun, "timestamp", "-r")
    assert "v2" in parse_list_output(reader.run_ok("list", gun).stdout)
    files = _verified(countersign_server, gun)
    root = Metadata.from_bytes(files["root"]).signed
    assert root.version >= 4  # type: ignore[attr-defined]

    admin.run_ok("remove", gun, "v1")
    admin.run_ok("publish", gun)
    assert "v1" not in parse_list_output(reader.run_ok("list", gun).stdout)
    _verified(countersign_server, gun)

    admin.run_ok("delete", gun, "--remote")
    status, _, _ = countersign_server.get_tuf(gun, "timestamp")
    assert status == 404
    fresh = notary_cli("fresh", server=countersign_server)
    assert "does not have trust data" in fresh.run("list", gun).stdout
