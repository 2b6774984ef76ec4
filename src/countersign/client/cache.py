"""The client's metadata cache, in notary's trust-dir layout, so notary can share it.

``<trust_dir>/tuf/<gun>/metadata/<role>.json`` holds the exact bytes last
trusted. The cache is what makes rollbacks detectable: versions read here are
the floors below which nothing is accepted again.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from countersign.errors import CountersignError
from countersign.tuf.metadata import MAX_METADATA_BYTES, is_role_name


def gun_path(gun: str) -> Path:
    """The GUN as a relative path, as notary uses it; refuses names that could escape."""
    parts = gun.split("/")
    if not gun or any(p in ("", ".", "..") for p in parts) or "\\" in gun or "\0" in gun:
        raise CountersignError(f"{gun!r} is not a repository name",
                               advice="use a name such as registry.example.com/team/app")
    return Path(*parts)


class MetadataCache:
    """Cached metadata of one GUN."""

    def __init__(self, trust_dir: Path, gun: str) -> None:
        self.directory = Path(trust_dir) / "tuf" / gun_path(gun) / "metadata"

    def path(self, role: str) -> Path:
        if not is_role_name(role):
            raise CountersignError(f"{role!r} is not a role name")
        return self.directory / f"{role}.json"

    def load(self, role: str) -> bytes | None:
        path = self.path(role)
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_METADATA_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CountersignError(f"cannot read cached {path}: {exc.strerror}") from None
        return data if len(data) <= MAX_METADATA_BYTES else None

    def store(self, role: str, data: bytes) -> None:
        """Write atomically: a crash leaves the old file or the new one, never half of one.

        A file that already holds exactly ``data`` is left alone: most refreshes
        re-trust unchanged files, and rewriting (and fsyncing) them would cost a
        disk flush each for nothing.
        """
        path = self.path(role)
        if self._holds(path, data):
            return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise CountersignError(f"cannot write cached {path}: {exc.strerror}") from None

    @staticmethod
    def _holds(path: Path, data: bytes) -> bool:
        """Whether ``path`` is what a write would leave: a regular file of ours, writable
        by no one else, whose bytes are exactly ``data``. A symlink or a file others may
        write could change after the check, so the cache would no longer hold what was
        verified: it is replaced."""
        try:  # not through a symlink; O_NONBLOCK: a FIFO must not hang the open
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return False  # missing, unreadable or a symlink: write it
        with os.fdopen(fd, "rb") as handle:
            try:
                info = os.fstat(handle.fileno())
                if (not stat.S_ISREG(info.st_mode) or info.st_size != len(data)
                        or info.st_uid != os.geteuid() or info.st_mode & 0o022):
                    return False
                return handle.read(len(data) + 1) == data
            except OSError:
                return False

    def remove(self, role: str) -> None:
        self.path(role).unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget everything cached for this GUN (e.g. after a remote delete)."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.rglob("*.json"), reverse=True):
            path.unlink(missing_ok=True)
