"""A throwaway CNCF distribution registry (Debian's ``docker-registry`` 2.8) for tests.

:class:`DockerRegistry` writes its own configuration (never the packaged
``/etc/docker/registry/config.yml``, which listens on every interface on :5000
and wants htpasswd) and runs ``docker-registry serve`` as a direct child of the
test process:

- it listens on 127.0.0.1 only, on a free port, plain HTTP (or HTTPS with a
  given certificate), no auth; storage is
  the filesystem driver under a temporary directory (:attr:`DockerRegistry.root`),
  deletes are enabled, the log level is ``warn`` and the access log is off;
- :meth:`DockerRegistry.start` returns once ``GET /v2/`` answers 200;
- :meth:`DockerRegistry.stop` sends SIGTERM, then SIGKILL, and removes the
  directory; an ``atexit`` hook does the same for a registry a fixture never
  stopped, and ``PR_SET_PDEATHSIG`` (SIGKILL) makes it die with the test
  process even when that is killed outright; the directory of such a run is
  removed by the next run (:func:`sweep_stale`).

Blobs are stored at ``root/docker/registry/v2/blobs/sha256/<xx>/<hex>/data``
(:meth:`DockerRegistry.blob_path`), which tamper tests overwrite.

The binary is ``$COUNTERSIGN_DOCKER_REGISTRY`` or ``docker-registry`` on PATH
(Debian: ``apt-get install docker-registry``); :func:`find_binary` returns
``None`` when there is none, which the fixture turns into a skip.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from procs import LiveSet, alive, die_with_parent, free_port, tail

DIR_PREFIX = "countersign-registry-"
_OWNER_FILE = "owner.pid"


_LIVE = LiveSet()

class RegistryStartError(RuntimeError):
    """docker-registry exited, or never answered on /v2/."""


def find_binary() -> Path | None:
    from countersign.sandbox.services import find_registry

    return find_registry()


def missing_reason() -> str | None:
    if find_binary() is None:
        return ("docker-registry (CNCF distribution) is not installed "
                "(Debian: apt-get install docker-registry, or scripts/system-deps.sh; "
                "or set COUNTERSIGN_DOCKER_REGISTRY)")
    return None








def sweep_stale(base: Path) -> None:
    """Remove the directories of earlier runs whose test process is gone."""
    for directory in base.glob(f"{DIR_PREFIX}*"):
        try:
            owner = int((directory / _OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if not alive(owner):
            shutil.rmtree(directory, ignore_errors=True)






class DockerRegistry:
    """One throwaway docker-registry; see the module docstring."""

    def __init__(self, binary: Path, *, base_dir: Path | None = None,
                 tls: tuple[Path, Path, Path] | None = None) -> None:
        """``tls`` is ``(certificate, key, ca)`` PEM files: serve HTTPS with that
        certificate (for 127.0.0.1), and check readiness trusting ``ca``."""
        self.binary = binary
        self.base_dir = base_dir
        self.tls = tls
        self.workdir: Path | None = None
        self.port = 0
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def registry(self) -> str:
        """``127.0.0.1:PORT``, as :class:`RegistryClient` and skopeo take it."""
        return f"127.0.0.1:{self.port}"

    @property
    def root(self) -> Path:
        """The filesystem driver's root directory."""
        assert self.workdir is not None, "registry not started"
        return self.workdir / "storage"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None, "registry not started"
        return self.workdir / "registry.log"

    def blob_path(self, digest: str) -> Path:
        """Where the registry keeps blob ``digest``'s bytes."""
        from countersign.sandbox.services import registry_blob_path

        return registry_blob_path(self.root, digest)

    def _config(self) -> str:
        from countersign.sandbox.services import registry_config

        return registry_config(self.root, f"127.0.0.1:{self.port}",
                               secret=f"countersign-test-{os.getpid()}", tls=self.tls)

    def start(self, timeout: float = 30.0) -> DockerRegistry:
        if self.popen is not None:
            raise RuntimeError("DockerRegistry already started")
        base = self.base_dir or Path(tempfile.gettempdir())
        sweep_stale(base)
        self.workdir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=base))
        (self.workdir / _OWNER_FILE).write_text(f"{os.getpid()}\n")
        self.root.mkdir()
        _LIVE.add(self)
        try:
            for _attempt in range(5):
                if self._serve(timeout):
                    return self
            raise RegistryStartError(
                f"docker-registry could not bind a free port after 5 attempts\n"
                f"--- {self.log_path} ---\n{tail(self.log_path)}")
        except BaseException:
            self.stop()
            raise

    def _serve(self, timeout: float) -> bool:
        """Start on a free port; False when the port was taken meanwhile."""
        assert self.workdir is not None
        self.port = free_port()
        config = self.workdir / "config.yml"
        config.write_text(self._config())
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir),
               "LC_ALL": "C", "TZ": "UTC"}
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [str(self.binary), "serve", str(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, env=env, close_fds=True, start_new_session=True,
                preexec_fn=functools.partial(die_with_parent, os.getpid()),  # noqa: PLW1509
            )
        deadline = time.monotonic() + timeout
        scheme = "https" if self.tls else "http"
        url = f"{scheme}://{self.registry}/v2/"
        context = ssl.create_default_context(cafile=str(self.tls[2])) if self.tls else None
        last = ""
        while True:
            rc = self.popen.poll()
            if rc is not None:
                log_text = tail(self.log_path)
                self.popen = None
                if "address already in use" in log_text:
                    return False
                raise RegistryStartError(f"docker-registry exited with status {rc}\n"
                                         f"--- {self.log_path} ---\n{log_text}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as answer:  # noqa: S310
                    if answer.status == 200:
                        return True
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                self.stop()
                raise RegistryStartError(
                    f"docker-registry did not answer {url} within {timeout:.0f}s "
                    f"(last error: {last})\n--- {self.log_path} ---\n{tail(self.log_path)}")
            time.sleep(0.05)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; remove the directory."""
        popen, self.popen = self.popen, None
        if popen is not None and popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    popen.kill()
                popen.wait(timeout=grace)
        _LIVE.discard(self)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

