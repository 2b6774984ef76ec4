"""Where key passphrases come from: environment variables, then an interactive prompt.

For a role the variables are tried in this order (the first one set to a
non-empty value wins; empty values count as unset, as in notary):

========================  =============================================
role                      variables
========================  =============================================
``root``                  ``COUNTERSIGN_ROOT_PASSPHRASE``,
                          ``NOTARY_ROOT_PASSPHRASE``,
                          ``DOCKER_CONTENT_TRUST_ROOT_PASSPHRASE``
``targets``               ``COUNTERSIGN_TARGETS_PASSPHRASE``,
                          ``NOTARY_TARGETS_PASSPHRASE``,
                          ``DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE``
``snapshot``              ``COUNTERSIGN_SNAPSHOT_PASSPHRASE``,
                          ``NOTARY_SNAPSHOT_PASSPHRASE``,
                          ``DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE``
``timestamp``             ``DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE``
                          (notary has no variable for it)
anything else             ``COUNTERSIGN_DELEGATION_PASSPHRASE``,
(delegations, ``""``)     ``NOTARY_DELEGATION_PASSPHRASE``,
                          ``DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE``
========================  =============================================

Then, only when stdin is a terminal, the user is asked (``getpass``; a new
passphrase must have at least 8 characters and is asked twice; surrounding
whitespace is dropped, as notary does). Otherwise a :class:`PassphraseError`
names the variable to set. Passphrases are never logged or shown in a repr.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from countersign.errors import PassphraseError

#: Shortest passphrase accepted for a new key at the prompt (notary's rule).
MIN_NEW_PASSPHRASE = 8
_ATTEMPTS = 3
BASE_ROLES = ("root", "targets", "snapshot", "timestamp")


@runtime_checkable
class PassphraseSource(Protocol):
    """Gives the passphrase of a key; ``new`` is true when a key is being encrypted.

    ``key_id`` may be empty when it is not known yet (a key being imported).
    Raises :class:`PassphraseError` when it has none to give.
    """

    def get(self, role: str, gun: str | None, key_id: str, *, new: bool) -> str: ...


class PassphraseCallback(Protocol):
    """A plain function can serve as a :class:`PassphraseSource`."""

    def __call__(self, role: str, gun: str | None, key_id: str, *, new: bool) -> str: ...


PassphraseProvider = PassphraseSource | PassphraseCallback


class _FromCallback:
    def __init__(self, callback: PassphraseCallback) -> None:
        self._callback = callback

    def get(self, role: str, gun: str | None, key_id: str, *, new: bool) -> str:
        return self._callback(role, gun, key_id, new=new)

    def __repr__(self) -> str:
        return "PassphraseSource(<callback>)"


def as_source(provider: PassphraseProvider) -> PassphraseSource:
    """A :class:`PassphraseSource` for either a source object or a callable."""
    if isinstance(provider, PassphraseSource):
        return provider
    if callable(provider):
        return _FromCallback(provider)
    raise TypeError("a passphrase source needs a get() method or must be callable")


def env_variables(role: str) -> tuple[str, ...]:
    """The environment variables tried for ``role``, in order."""
    repository = "DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE"
    if role == "root":
        return (
            "COUNTERSIGN_ROOT_PASSPHRASE",
            "NOTARY_ROOT_PASSPHRASE",
            "DOCKER_CONTENT_TRUST_ROOT_PASSPHRASE",
        )
    if role in ("targets", "snapshot"):
        upper = role.upper()
        return (f"COUNTERSIGN_{upper}_PASSPHRASE", f"NOTARY_{upper}_PASSPHRASE", repository)
    if role == "timestamp":
        return (repository,)
    return ("COUNTERSIGN_DELEGATION_PASSPHRASE", "NOTARY_DELEGATION_PASSPHRASE", repository)


def _describe(role: str, gun: str | None, key_id: str) -> str:
    text = f"{role or 'delegation'} key"
    if key_id:
        text += f" {key_id[:7]}"
    if gun:
        text += f" of {gun}"
    return text


def _missing(role: str, gun: str | None, key_id: str) -> PassphraseError:
    variable = env_variables(role)[0]
    return PassphraseError(
        f"no passphrase available for the {_describe(role, gun, key_id)}",
        advice=f"set {variable} (or run in a terminal to be asked)",
    )


class EnvPassphrases:
    """Passphrases from environment variables only (see the module docstring)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def lookup(self, role: str) -> str | None:
        for name in env_variables(role):
            value = self._environ.get(name)
            if value:
                return value
        return None

    def get(self, role: str, gun: str | None, key_id: str, *, new: bool) -> str:
        value = self.lookup(role)
        if value is None:
            raise _missing(role, gun, key_id)
        return value

    def __repr__(self) -> str:
        return "EnvPassphrases()"


class PromptPassphrases:
    """Asks on the terminal; refuses (with advice) when stdin is not a terminal."""

    def __init__(
        self,
        *,
        ask: Callable[[str], str] | None = None,
        is_tty: Callable[[], bool] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self._ask = ask or (lambda prompt: getpass.getpass(prompt, stream=sys.stderr))
        self._is_tty = is_tty or (lambda: sys.stdin is not None and sys.stdin.isatty())
        self._say = say or (lambda text: print(text, file=sys.stderr))

    def _read(self, prompt: str) -> str:
        try:
            return self._ask(prompt).strip()
        except (EOFError, KeyboardInterrupt):
            raise PassphraseError("passphrase entry was cancelled") from None

    def get(self, role: str, gun: str | None, key_id: str, *, new: bool) -> str:
        if not self._is_tty():
            raise _missing(role, gun, key_id)
        described = _describe(role, gun, key_id)
        if not new:
            return self._read(f"Enter passphrase for {described}: ")
        for _ in range(_ATTEMPTS):
            first = self._read(f"Enter passphrase for new {described}: ")
            if len(first) < MIN_NEW_PASSPHRASE:
                self._say(f"Passphrase is too short; use at least {MIN_NEW_PASSPHRASE} characters.")
                continue
            if self._read(f"Repeat passphrase for new {described}: ") != first:
                self._say("Passphrases do not match. Please retry.")
                continue
            return first
        raise PassphraseError(
            f"no acceptable passphrase entered for the new {described}",
            advice=f"use at least {MIN_NEW_PASSPHRASE} characters and type it the same twice",
        )

    def __repr__(self) -> str:
        return "PromptPassphrases()"


class DefaultPassphrases:
    """What the CLI uses: the environment first, then the terminal."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        prompt: PromptPassphrases | None = None,
    ) -> None:
        self._env = EnvPassphrases(environ)
        self._prompt = prompt or PromptPassphrases()

    def get(self, role: str, gun: str | None, key_id: str, *, new: bool) -> str:
        value = self._env.lookup(role)
        if value is not None:
            return value
        return self._prompt.get(role, gun, key_id, new=new)

    def __repr__(self) -> str:
        return "DefaultPassphrases()"


class StaticPassphrases:
    """Fixed passphrases, by role or one for all: for tests and for ``--passphrase-file``."""

    def __init__(self, passphrases: str | Mapping[str, str]) -> None:
        self._all = passphrases if isinstance(passphrases, str) else None
        self._by_role = {} if isinstance(passphrases, str) else dict(passphrases)

    def get(self, role: str, gun: str | None, key_id: str, *, new: bool) -> str:
        if self._all is not None:
            return self._all
        value = self._by_role.get(role)
        if value is None and role not in BASE_ROLES:
            value = self._by_role.get("delegation")
        if value is None:
            raise _missing(role, gun, key_id)
        return value

    def __repr__(self) -> str:
        return f"StaticPassphrases(roles={sorted(self._by_role)!r})"


__all__ = [
    "MIN_NEW_PASSPHRASE",
    "DefaultPassphrases",
    "EnvPassphrases",
    "PassphraseCallback",
    "PassphraseProvider",
    "PassphraseSource",
    "PromptPassphrases",
    "StaticPassphrases",
    "as_source",
    "env_variables",
]
