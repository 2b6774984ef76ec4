"""The trust server's routes and update validation, in-process on SQLite."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from typing import Any

from asgi import call
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serverrepo import GUN, Repo, _get, _multipart, _post

from countersign.server.app import TrustServer, route
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
    Root,
    new_snapshot,
    new_targets,
    root_certificate_key,
)
from countersign.tuf.repository import verify_repository


def test_route_table() -> None:
    assert route("GET", "/v2/").name == "base"
    r = route("GET", "/v2/a/b:5000/c/_trust/tuf/targets/releases." + "a" * 64 + ".json")
    assert (r.name, r.gun, r.role, r.checksum) == ("get", "a/b:5000/c", "targets/releases",
                                                  "a" * 64)
    r = route("GET", "/v2/g/_trust/tuf/12.targets/x.json")
    assert (r.role, r.version) == ("targets/x", 12)
    assert route("GET", "/v2/g/_trust/tuf/timestamp.key").name == "key"
    assert route("GET", "/v2/g/_trust/tuf/root.key").name == "notfound"
    assert route("GET", "/v2/g/_trust/tuf/../root.json").name == "notfound"
    assert route("GET", "/v2/g*/_trust/tuf/root.json").name == "notfound"
    assert route("POST", "/v2/g/_trust/tuf/").name == "update"
    assert route("GET", "/v2/g/_trust/changefeed").gun == "g"
    assert route("GET", "/v2/" + "a" * 300 + "/_trust/tuf/root.json").name == "notfound"


def test_publish_and_serve(trust_app: TrustServer) -> None:
    repo = Repo(trust_app)
    repo.add_target("v1", b"manifest")
    assert repo.publish(ROOT, TARGETS) == (200, None)
    files = repo.served()
    assert files[ROOT] == repo.root.to_bytes() and files[TARGETS] == repo.targets.to_bytes()
    report = verify_repository(files, GUN)
    assert report.lookup("v1") is not None
    # by checksum and by version
    digest = FileMeta.for_bytes(files[TARGETS]).hashes["sha256"].hex()
    assert _get(trust_app, f"targets.{digest}.json") == (200, files[TARGETS])
    assert _get(trust_app, "1.root.json") == (200, files[ROOT])
    assert _get(trust_app, "9.root.json")[0] == 404
    repo.add_target("v2", b"second")
    assert repo.publish(TARGETS) == (200, None)
    assert verify_repository(repo.served(), GUN).lookup("v2") is not None
    assert Metadata.from_bytes(repo.served()[SNAPSHOT]).signed.version == 2


def test_stale_version_is_refused(trust_app: TrustServer) -> None:
    repo = Repo(trust_app)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    status, answer = repo.publish(TARGETS)
    assert status == 400 and answer["errors"][0] == {
        "code": "VERSION", "message": "A newer version of metadata is already available.",
        "detail": {}}


def test_root_rotation_needs_the_old_root(trust_app: TrustServer) -> None:
    repo = Repo(trust_app)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    thief = PrivateKey.generate()
    thief_public = root_certificate_key(thief, GUN)
    keys = dict(repo.root.signed.keys)
    keys[thief_public.key_id] = thief_public
    roles = dict(repo.root.signed.roles)
    roles[ROOT] = Role((thief_public.key_id,))
    forged = Metadata(replace(repo.root.signed, version=2, keys=keys, roles=roles)).sign(
        thief, thief_public)
    status, answer = _post(trust_app, {ROOT: forged.to_bytes()})
    assert status == 400
    assert answer["errors"][0]["detail"]["Name"] == "ErrBadRoot"
    assert "threshold of the trusted root" in answer["errors"][0]["detail"]["Error"]["Msg"]
    # signed by both, it is accepted
    both = forged.sign(repo.root_key, repo.root_public)
    assert _post(trust_app, {ROOT: both.to_bytes()})[0] == 200


def test_version_rules_for_root(trust_app: TrustServer) -> None:
    repo = Repo(trust_app)
    repo.root = Metadata(replace(repo.root.signed, version=3)).sign(repo.root_key,
                                                                     repo.root_public)
    status, answer = repo.publish(ROOT, TARGETS)
    assert status == 400
    assert answer["errors"][0]["detail"] == {"Name": "ErrBadRoot", "Error": {
        "Msg": "Root modifications must increment the version. Current 1, new 3"}}


def test_root_for_another_gun_is_refused(trust_app: TrustServer) -> None:
    repo = Repo(trust_app, gun="other/gun")
    status, answer = _post(trust_app, repo.files(ROOT, TARGETS), gun=GUN)
    assert status == 400 and answer["errors"][0]["detail"]["Name"] == "ErrBadRoot"


def test_non_canonical_upload_is_refused(trust_app: TrustServer) -> None:
    repo = Repo(trust_app)
    files = repo.files(ROOT, TARGETS)
    files[TARGETS] = json.dumps(json.loads(files[TARGETS]), indent=1).encode()
    status, answer = _post(trust_app, files)
    assert status == 400
    assert "canonical file form" in answer["errors"][0]["detail"]["Error"]["Msg"]
    assert _get(trust_app, "root.json")[0] == 404  # nothing was stored


def test_snapshot_must_pin_what_is_uploaded(trust_app: TrustServer) -> None:
    repo = Repo(trust_app, client_snapshot=True)
    assert repo.snapshot_key is not None
    other = new_targets(version=1).sign(repo.targets_key, repo.targets_key.public_key)
    snapshot = new_snapshot({ROOT: repo.root.file_meta(), TARGETS: other.file_meta()}).sign(
        repo.snapshot_key, repo.snapshot_key.public_key)
    files = {**repo.files(ROOT, TARGETS), SNAPSHOT: snapshot.to_bytes()}
    status, answer = _post(trust_app, files)
    assert status == 400 and answer["errors"][0]["detail"]["Name"] == "ErrBadSnapshot"
    good = new_snapshot({ROOT: repo.root.file_meta(), TARGETS: repo.targets.file_meta()}).sign(
        repo.snapshot_key, repo.snapshot_key.public_key)
    assert _post(trust_app, {**repo.files(ROOT, TARGETS), SNAPSHOT: good.to_bytes()})[0] == 200
    # the server does not hold the snapshot key: a targets-only update needs a snapshot
    repo.add_target("v1", b"x")
    status, answer = repo.publish(TARGETS)
    assert status == 400 and answer["errors"][0]["detail"] == {
        "Name": "ErrBadHierarchy", "Error": {"Missing": "snapshot", "Msg": (
            "no snapshot was included in update and server does not hold current snapshot "
            "key for repository")}}


def test_delegations_are_checked_against_their_parent(trust_app: TrustServer) -> None:
    repo = Repo(trust_app)
    stage = PrivateKey.generate("rsa", rsa_bits=2048)
    delegation = DelegatedRole("targets/static-tested", (stage.public_key.key_id,), 1, ("",))
    repo.targets = Metadata(replace(repo.targets.signed, delegations=Delegations(
        {stage.public_key.key_id: stage.public_key}, (delegation,)))).sign(
        repo.targets_key, repo.targets_key.public_key)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    signed_by_stage = new_targets(targets={"build-1": FileMeta.for_bytes(b"x")}).sign(
        stage, stage.public_key)
    status, _ = _post(trust_app, {"targets/static-tested": signed_by_stage.to_bytes()})
    assert status == 200
    intruder = PrivateKey.generate()
    forged = new_targets(version=2).sign(intruder, intruder.public_key)
    status, answer = _post(trust_app, {"targets/static-tested": forged.to_bytes()})
    assert status == 400 and answer["errors"][0]["detail"]["Name"] == "ErrBadTargets"
    undelegated = new_targets().sign(intruder, intruder.public_key)
    status, answer = _post(trust_app, {"targets/fuzz-tested": undelegated.to_bytes()})
    assert status == 400 and "not delegated" in answer["errors"][0]["detail"]["Error"]["Msg"]
    assert verify_repository(
        {**repo.served(), "targets/static-tested": signed_by_stage.to_bytes()}, GUN
    ).lookup("build-1", ("targets/static-tested",)) is not None


def test_expired_timestamp_is_signed_again_on_read(trust_app: TrustServer) -> None:
    repo = Repo(trust_app)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=20)
    view = trust_app.processor.fresh_view(GUN, now=later)
    assert view is not None
    renewed = Metadata.from_bytes(view.timestamp.data)
    assert renewed.signed.version == 2
    assert not renewed.signed.is_expired()


def test_server_keys_are_stable_until_rotated(trust_app: TrustServer) -> None:
    repo = Repo(trust_app)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    listed = repo.root.signed.roles[TIMESTAMP].keyids[0]
    assert repo.server_key(TIMESTAMP).key_id == listed
    status, _, body = call(trust_app, "POST", f"/v2/{GUN}/_trust/tuf/timestamp.key")
    assert status == 200 and PublicKey.from_dict(json.loads(body)).key_id != listed
    assert repo.server_key(TIMESTAMP).key_id == listed  # root still lists the old one


def test_body_limit(trust_app: TrustServer) -> None:
    body, headers = _multipart({"targets": b"x" * (2 << 20)})
    status, _, answer = call(trust_app, "POST", f"/v2/{GUN}/_trust/tuf/", body, headers)
    assert status == 413 and b"TOO_LARGE" in answer



def test_a_deleted_repository_is_not_served_from_memory(trust_app: TrustServer) -> None:
    """Files the server wrote are remembered by checksum and version; a deletion
    forgets them, as notary-server answers 404 for them afterwards."""
    repo = Repo(trust_app)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    files = repo.served()
    digest = FileMeta.for_bytes(files[SNAPSHOT]).hashes["sha256"].hex()
    assert _get(trust_app, f"snapshot.{digest}.json") == (200, files[SNAPSHOT])
    assert _get(trust_app, "1.timestamp.json") == (200, files[TIMESTAMP])
    assert call(trust_app, "DELETE", f"/v2/{GUN}/_trust/tuf/")[0] == 200
    assert _get(trust_app, f"snapshot.{digest}.json")[0] == 404
    assert _get(trust_app, "1.timestamp.json")[0] == 404

def test_change_feed(trust_app: TrustServer) -> None:
    repo = Repo(trust_app)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    status, _, body = call(trust_app, "GET", f"/v2/{GUN}/_trust/changefeed",
                           query=b"change_id=0&records=10")
    feed = json.loads(body)
    assert status == 200 and feed["count"] == 1
    assert feed["records"][0]["Category"] == "update" and feed["records"][0]["GUN"] == GUN
    assert call(trust_app, "DELETE", f"/v2/{GUN}/_trust/tuf/")[0] == 200
    status, _, body = call(trust_app, "GET", "/v2/_trust/changefeed",
                           query=b"change_id=-1&records=1")
    assert json.loads(body)["records"][0]["Category"] == "deletion"


METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"])
SEGMENTS = st.sampled_from(["v2", "_trust", "tuf", "changefeed", "root.json", "targets",
                            "timestamp.key", "1.root.json", "..", ".", "", "%2e", "*",
                            "releases.json", "a" * 64 + ".json", GUN, "_notary_server"])
PATHS = st.lists(SEGMENTS | st.text(max_size=12), max_size=8).map(lambda p: "/" + "/".join(p))


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                   HealthCheck.too_slow], deadline=None)
@given(method=METHODS, path=PATHS, body=st.binary(max_size=200),
       content_type=st.sampled_from(["", "multipart/form-data; boundary=x", "text/plain",
                                     "multipart/form-data", "multipart/form-data; boundary="]))
def test_hostile_requests_never_get_a_5xx(trust_app: TrustServer, method: str, path: str,
                                          body: bytes, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    status, _, answer = call(trust_app, method, path, body, headers)
    assert status < 500, (method, path, answer)


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(
                           st.text(max_size=8), c, max_size=3), max_leaves=12)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                   HealthCheck.too_slow], deadline=None)
@given(role=st.sampled_from([ROOT, TARGETS, SNAPSHOT, TIMESTAMP, "targets/a", "targets.json"]),
       signed=JSONISH, mutate=st.integers(0, 3))
def test_hostile_metadata_never_gets_a_5xx(trust_app: TrustServer, role: str, signed: Any,
                                           mutate: int) -> None:
    doc: Any = {"signed": signed, "signatures": []}
    if mutate == 1 and isinstance(signed, dict):
        doc["signed"] = {"_type": "Root", "expires": "2030-01-01T00:00:00Z", "version": 1,
                         **signed}
    elif mutate == 2:
        doc = signed
    elif mutate == 3:
        doc["signed"] = {"_type": "Targets", "expires": "2030-01-01T00:00:00Z", "version": 1,
                         "targets": signed, "delegations": signed}
    status, answer = _post(trust_app, {role: json.dumps(doc).encode()})
    assert 400 <= status < 500, answer


def test_unknown_key_types_and_expired_certificates(trust_app: TrustServer) -> None:
    repo = Repo(trust_app)
    root = json.loads(repo.root.to_bytes())
    keyid = next(iter(root["signed"]["keys"]))
    root["signed"]["keys"][keyid]["keytype"] = "dsa"
    status, _ = _post(trust_app, {ROOT: json.dumps(root, separators=(",", ":")).encode()})
    assert 400 <= status < 500
    from countersign.tuf.x509 import make_certificate

    old = make_certificate(repo.root_key, GUN, now=dt.datetime(2001, 1, 1, tzinfo=dt.UTC),
                           validity=dt.timedelta(days=30))
    expired = PublicKey.from_certificates([old])
    keys = dict(repo.root.signed.keys)
    keys[expired.key_id] = expired
    roles = dict(repo.root.signed.roles)
    roles[ROOT] = Role((expired.key_id,))
    md: Metadata[Root] = Metadata(replace(repo.root.signed, keys=keys, roles=roles)).sign(
        repo.root_key, expired)
    status, answer = _post(trust_app, {ROOT: md.to_bytes(), TARGETS: repo.targets.to_bytes()})
    assert status == 400 and "expired" in json.dumps(answer)


def test_one_reload_serves_many_readers(tmp_path: Any) -> None:
    import asyncio

    from asgi import _call

    from countersign.server.app import ServerConfig
    from countersign.server.signer import DatabaseKeyService
    from countersign.server.storage import Storage

    storage = Storage(f"sqlite:///{tmp_path / 's.db'}")
    app = TrustServer(storage, DatabaseKeyService(storage, "test-signer-passphrase"),
                      config=ServerConfig(cache_ttl=60.0))
    repo = Repo(app)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    app._forget(GUN)  # the publish left its own view cached: start cold
    calls = 0
    original = app.processor.fresh_view

    def counted(gun: str, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(gun, **kwargs)

    app.processor.fresh_view = counted  # type: ignore[method-assign]

    async def many() -> list[int]:
        results = await asyncio.gather(*(
            _call(app, "GET", f"/v2/{GUN}/_trust/tuf/timestamp.json", b"", {}, b"")
            for _ in range(50)))
        return [status for status, _, _ in results]

    assert asyncio.run(many()) == [200] * 50
    assert calls == 1
    # a write replaces the view: the next read sees it at once, without a reload
    repo.add_target("v9", b"new")
    assert repo.publish(TARGETS)[0] == 200
    status, body = _get(app, "targets.json")
    assert status == 200 and body == repo.targets.to_bytes()
    assert calls == 1
    # and what it serves is what a reload from the database gives
    assert app.processor.fresh_view(GUN) == app._views[GUN].view
    storage.close()


def test_instances_sharing_a_database_never_build_on_a_stale_view(tmp_path: Any) -> None:
    """Each instance serves its own writes from memory; an update that another
    instance (or a deletion) overtook is re-validated on what is stored, never
    stored on top of what this instance remembered."""
    from countersign.server.app import ServerConfig
    from countersign.server.signer import DatabaseKeyService
    from countersign.server.storage import Storage

    def instance() -> tuple[TrustServer, Storage]:
        storage = Storage(f"sqlite:///{tmp_path / 's.db'}")
        return TrustServer(storage, DatabaseKeyService(storage, "test-signer-passphrase"),
                           config=ServerConfig(cache_ttl=60.0)), storage

    (one, s1), (two, s2) = instance(), instance()
    repo = Repo(one)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    repo.app = two  # the next update reaches the other instance, which caches its result
    repo.add_target("a", b"a")
    assert repo.publish(TARGETS)[0] == 200
    repo.app = one  # this one still holds the view of its own first publish
    repo.add_target("b", b"b")
    assert repo.publish(TARGETS)[0] == 200
    served = repo.served()
    assert served[TARGETS] == repo.targets.to_bytes()
    timestamp = Metadata.from_bytes(served[TIMESTAMP], role=TIMESTAMP)
    assert timestamp.signed.version == 3  # one timestamp per update, none lost or doubled
    verify_repository(served, repo.gun)
    # a deletion through one instance: the other refuses to build on what it remembered
    status, _, _ = call(two, "DELETE", f"/v2/{repo.gun}/_trust/tuf/")
    assert status == 200
    repo.add_target("c", b"c")
    status, answer = repo.publish(TARGETS)
    assert status == 400 and "no pre-existing root" in json.dumps(answer)
    assert _get(one, "targets.json")[0] in (200, 404)  # at most its cached copy, for cache_ttl
    assert s1.latest(repo.gun, TARGETS) is None
    s1.close()
    s2.close()
