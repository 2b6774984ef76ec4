"""``countersign serve`` under concurrency and crashes, over real HTTPS.

- 16 publishers, each owning a delegation of one repository, publish at once;
  every acknowledged update is served afterwards, no version is written twice,
  and the repository verifies.
- The server is killed with SIGKILL in the middle of a burst of updates to many
  repositories; restarted on the same database, every repository is readable
  and verifies, and every acknowledged update is there.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from _countersign import CountersignServer
from _tufhttp import create_repository, fetch_repository, post_update

from countersign.tuf import (
    TARGETS,
    DelegatedRole,
    Delegations,
    FileMeta,
    Metadata,
    PrivateKey,
    Targets,
    new_targets,
)
from countersign.tuf.repository import verify_repository

pytestmark = pytest.mark.interop

PUBLISHERS = 16
ROUNDS = 3


def _delegate(server: CountersignServer, gun: str, keys: dict[str, PrivateKey],
              names: list[str]) -> dict[str, PrivateKey]:
    files = fetch_repository(server, gun)  # type: ignore[arg-type]
    targets = Metadata.from_bytes(files[TARGETS], Targets)
    owned = {name: PrivateKey.generate() for name in names}
    delegations = Delegations(
        {**targets.signed.delegations.keys, **{k.public_key.key_id: k.public_key
                                                for k in owned.values()}},
        (*targets.signed.delegations.roles,
         *(DelegatedRole(n, (k.public_key.key_id,), 1, ("",)) for n, k in owned.items())))
    new = Metadata(replace(targets.signed.bump(role=TARGETS), delegations=delegations))
    status, body = post_update(server, gun, {  # type: ignore[arg-type]
        TARGETS: new.sign(keys[TARGETS], keys[TARGETS].public_key).to_bytes()})
    assert status == 200, body
    return owned


def test_concurrent_publishers_lose_nothing(countersign_server: CountersignServer,
                                            gun: str) -> None:
    keys = create_repository(countersign_server, gun, b"base", client_snapshot=False)  # type: ignore[arg-type]
    names = [f"targets/publisher-{i}" for i in range(PUBLISHERS)]
    owned = _delegate(countersign_server, gun, keys, names)
    acknowledged: dict[str, int] = {}
    conflicts = 0
    lock = threading.Lock()
    start = threading.Barrier(PUBLISHERS)

    def publish(name: str) -> None:
        nonlocal conflicts
        key = owned[name]
        start.wait()
        for version in range(1, ROUNDS + 1):
            md = new_targets(version=version, targets={
                f"{name.split('/')[1]}-{v}": FileMeta.for_bytes(f"{name}{v}".encode())
                for v in range(1, version + 1)}).sign(key, key.public_key)
            for _attempt in range(200):
                status, body = post_update(countersign_server, gun, {name: md.to_bytes()})  # type: ignore[arg-type]
                if status == 200:
                    with lock:
                        acknowledged[name] = version
                    break
                assert status == 400 and b'"VERSION"' in body, (status, body)
                with lock:
                    conflicts += 1
            else:
                pytest.fail(f"{name} never got version {version} in")

    with ThreadPoolExecutor(PUBLISHERS) as pool:
        list(pool.map(publish, names))
    assert acknowledged == dict.fromkeys(names, ROUNDS)

    files = fetch_repository(countersign_server, gun)  # type: ignore[arg-type]
    report = verify_repository(files, gun)
    for name in names:
        assert report.roles[name].version == ROUNDS
        for v in range(1, ROUNDS + 1):
            assert report.lookup(f"{name.split('/')[1]}-{v}", (name,)) is not None
    # every snapshot version from 1 to the current one exists exactly once
    current = Metadata.from_bytes(files["snapshot"]).signed.version
    assert current == 2 + PUBLISHERS * ROUNDS  # repository, delegations, then each update
    for version in range(1, current + 1):
        status, _, _ = countersign_server.get_tuf(gun, "snapshot", version=version)
        assert status == 200, version
    assert countersign_server.get_tuf(gun, "snapshot", version=current + 1)[0] == 404


def test_sigkill_during_a_burst(tmp_path: Path) -> None:
    server = CountersignServer(tmp_path / "server")
    server.start()
    guns = [f"localhost:5000/crash/repo-{i}" for i in range(8)]
    keys = {g: create_repository(server, g, b"base", client_snapshot=False) for g in guns}  # type: ignore[arg-type]
    acknowledged: dict[str, int] = {}
    lock = threading.Lock()
    killed = threading.Event()

    def burst(gun: str) -> None:
        key = keys[gun][TARGETS]
        for n in range(1, 200):
            if killed.is_set():
                return
            try:
                files = fetch_repository(server, gun)  # type: ignore[arg-type]
                current = Metadata.from_bytes(files[TARGETS], Targets)
                entries = dict(current.signed.targets)
                entries[f"t{n}"] = FileMeta.for_bytes(f"{gun}{n}".encode())
                new = Metadata(replace(current.signed.bump(role=TARGETS), targets=entries))
                status, _ = post_update(server, gun, {  # type: ignore[arg-type]
                    TARGETS: new.sign(key, key.public_key).to_bytes()})
            except (OSError, AssertionError):
                return  # the server is gone
            if status == 200:
                with lock:
                    acknowledged[gun] = new.signed.version

    threads = [threading.Thread(target=burst, args=(g,)) for g in guns]
    for thread in threads:
        thread.start()
    while sum(acknowledged.values()) < 40 and any(t.is_alive() for t in threads):
        threading.Event().wait(0.02)
    server.kill()
    killed.set()
    for thread in threads:
        thread.join()

    server.start()  # same database
    try:
        for gun in guns:
            files = fetch_repository(server, gun)  # type: ignore[arg-type]
            verify_repository(files, gun)
            served = Metadata.from_bytes(files[TARGETS]).signed.version
            assert served >= acknowledged.get(gun, 1), gun
    finally:
        server.stop()
