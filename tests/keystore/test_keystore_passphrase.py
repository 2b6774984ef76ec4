"""Passphrase sources: environment precedence, prompting rules, no leaked secrets."""

from __future__ import annotations

import pytest

from countersign.errors import PassphraseError
from countersign.keystore import (
    DefaultPassphrases,
    EnvPassphrases,
    PassphraseSource,
    PromptPassphrases,
    StaticPassphrases,
)
from countersign.keystore.passphrase import as_source, env_variables

KEY_ID = "ab" * 32


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("root", ("COUNTERSIGN_ROOT", "NOTARY_ROOT", "DOCKER_CONTENT_TRUST_ROOT")),
        ("targets", ("COUNTERSIGN_TARGETS", "NOTARY_TARGETS", "DOCKER_CONTENT_TRUST_REPOSITORY")),
        (
            "snapshot",
            ("COUNTERSIGN_SNAPSHOT", "NOTARY_SNAPSHOT", "DOCKER_CONTENT_TRUST_REPOSITORY"),
        ),
        ("timestamp", ("DOCKER_CONTENT_TRUST_REPOSITORY",)),
        (
            "targets/releases",
            ("COUNTERSIGN_DELEGATION", "NOTARY_DELEGATION", "DOCKER_CONTENT_TRUST_REPOSITORY"),
        ),
        (
            "alice",
            ("COUNTERSIGN_DELEGATION", "NOTARY_DELEGATION", "DOCKER_CONTENT_TRUST_REPOSITORY"),
        ),
        ("", ("COUNTERSIGN_DELEGATION", "NOTARY_DELEGATION", "DOCKER_CONTENT_TRUST_REPOSITORY")),
    ],
)
def test_env_variable_order(role: str, expected: tuple[str, ...]) -> None:
    assert env_variables(role) == tuple(f"{name}_PASSPHRASE" for name in expected)


def test_countersign_wins_over_notary_over_docker() -> None:
    env = {
        "COUNTERSIGN_TARGETS_PASSPHRASE": "cs",
        "NOTARY_TARGETS_PASSPHRASE": "notary",
        "DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE": "docker",
    }
    source = EnvPassphrases(env)
    assert source.get("targets", "g", KEY_ID, new=False) == "cs"
    del env["COUNTERSIGN_TARGETS_PASSPHRASE"]
    assert source.get("targets", "g", KEY_ID, new=False) == "notary"
    env["NOTARY_TARGETS_PASSPHRASE"] = ""  # empty counts as unset, as in notary
    assert source.get("targets", "g", KEY_ID, new=True) == "docker"


def test_delegation_variable_serves_any_non_base_role() -> None:
    source = EnvPassphrases({"NOTARY_DELEGATION_PASSPHRASE": "d"})
    assert source.get("targets/releases", None, KEY_ID, new=False) == "d"
    assert source.get("alice", None, KEY_ID, new=False) == "d"
    with pytest.raises(PassphraseError):
        source.get("snapshot", "g", KEY_ID, new=False)


def test_missing_variable_advice_names_the_variable() -> None:
    with pytest.raises(PassphraseError) as caught:
        EnvPassphrases({}).get("root", None, KEY_ID, new=False)
    assert caught.value.advice is not None
    assert "COUNTERSIGN_ROOT_PASSPHRASE" in caught.value.advice


def test_default_without_tty_refuses_with_advice() -> None:
    prompt = PromptPassphrases(ask=lambda _: pytest.fail("must not prompt"), is_tty=lambda: False)
    source = DefaultPassphrases({}, prompt)
    with pytest.raises(PassphraseError) as caught:
        source.get("snapshot", "example.com/app", KEY_ID, new=False)
    assert "COUNTERSIGN_SNAPSHOT_PASSPHRASE" in (caught.value.advice or "")
    assert "example.com/app" in caught.value.message


def test_default_prefers_environment() -> None:
    prompt = PromptPassphrases(ask=lambda _: pytest.fail("must not prompt"), is_tty=lambda: True)
    source = DefaultPassphrases({"NOTARY_ROOT_PASSPHRASE": "from-env"}, prompt)
    assert source.get("root", None, KEY_ID, new=True) == "from-env"


def _scripted(answers: list[str], said: list[str]) -> PromptPassphrases:
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return answers.pop(0)

    return PromptPassphrases(ask=ask, is_tty=lambda: True, say=said.append)


def test_prompt_for_existing_key_strips_whitespace() -> None:
    assert _scripted(["  secret \n"], []).get("root", None, KEY_ID, new=False) == "secret"


def test_prompt_new_needs_eight_characters_twice() -> None:
    said: list[str] = []
    source = _scripted(["short", "longenough1", "different!!", "longenough2", "longenough2"], said)
    assert source.get("targets", "g", KEY_ID, new=True) == "longenough2"
    assert any("too short" in line for line in said)
    assert any("do not match" in line for line in said)
    assert not any("longenough" in line for line in said)


def test_prompt_gives_up_after_three_attempts() -> None:
    source = _scripted(["a", "b", "c"], [])
    with pytest.raises(PassphraseError, match="no acceptable passphrase") as caught:
        source.get("root", None, KEY_ID, new=True)
    assert "8" in (caught.value.advice or "")


def test_prompt_cancelled() -> None:
    def ask(_: str) -> str:
        raise EOFError

    with pytest.raises(PassphraseError, match="cancelled"):
        PromptPassphrases(ask=ask, is_tty=lambda: True).get("root", None, KEY_ID, new=False)


def test_static_passphrases() -> None:
    source = StaticPassphrases({"root": "r", "delegation": "d"})
    assert source.get("root", None, KEY_ID, new=False) == "r"
    assert source.get("targets/x", None, KEY_ID, new=False) == "d"
    with pytest.raises(PassphraseError):
        source.get("targets", "g", KEY_ID, new=False)
    assert StaticPassphrases("one").get("snapshot", "g", "", new=True) == "one"


def test_reprs_hide_secrets() -> None:
    for source in (
        StaticPassphrases("topsecret"),
        StaticPassphrases({"root": "topsecret"}),
        EnvPassphrases({"NOTARY_ROOT_PASSPHRASE": "topsecret"}),
        DefaultPassphrases({"NOTARY_ROOT_PASSPHRASE": "topsecret"}),
        as_source(lambda role, gun, key_id, *, new: "topsecret"),
    ):
        assert "topsecret" not in repr(source)


def test_callables_and_objects_are_sources() -> None:
    calls: list[tuple[str, str | None, str, bool]] = []

    def callback(role: str, gun: str | None, key_id: str, *, new: bool) -> str:
        calls.append((role, gun, key_id, new))
        return "cb"

    source = as_source(callback)
    assert source.get("root", None, KEY_ID, new=True) == "cb"
    assert calls == [("root", None, KEY_ID, True)]
    static = StaticPassphrases("x")
    assert as_source(static) is static
    assert isinstance(static, PassphraseSource)
