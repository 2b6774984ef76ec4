"""docs/examples: the policy loads, and every command in the CI files parses for real.

Every ``countersign ...`` command in the GitHub and GitLab pipelines and in the
README is parsed with ``countersign.cli.main.build_parser``; every ``python -m
countersign.assure.fuzzing`` command in the policy with the harness's own parser.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from countersign.assure import fuzzing
from countersign.assure.policy import load_policy
from countersign.cli.main import build_parser

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"
ENVIRON = {"COUNTERSIGN_SERVER": "https://notary.example.com"}
STAGES = ("static-tested", "dynamic-tested", "fuzz-tested")
_SEPARATORS = {"&&", "||", ";", "|", "&"}
_REDIRECTS = {">", ">>", "<", "2>", ">&"}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.DOTALL)


def _shell_commands(text: str) -> list[list[str]]:
    """The simple commands of a shell script: words, without redirections or assignments."""
    commands: list[list[str]] = []
    for line in text.replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        skip_next = False
        for token in lexer:
            if skip_next:
                skip_next = False
            elif token in _SEPARATORS:
                commands.append(current)
                current = []
            elif token in _REDIRECTS:
                skip_next = True
            else:
                current.append(token)
        commands.append(current)
    result = []
    for words in commands:
        start = 0
        while start < len(words) and _ASSIGNMENT.fullmatch(words[start]):
            start += 1
        if words[start:]:
            result.append(words[start:])
    return result


def _scripts(node: Any, key: str | None = None) -> list[str]:
    """Every shell text in a CI file: GitHub ``run``, GitLab ``script``/``before_script``."""
    found: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            found.extend(_scripts(v, str(k)))
    elif isinstance(node, list):
        for item in node:
            found.extend(_scripts(item, key))
    elif isinstance(node, str) and key in ("run", "script", "before_script", "after_script"):
        found.append(node)
    return found


def _readme_scripts() -> list[str]:
    text = (EXAMPLES / "README.md").read_text()
    return re.findall(r"```sh\n(.*?)```", text, re.DOTALL)


def _countersign_commands(texts: list[str]) -> list[list[str]]:
    return [words[1:] for text in texts for words in _shell_commands(text)
            if words[0] == "countersign"]


def _parse(argv: list[str]) -> argparse.Namespace:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"countersign {shlex.join(argv)} does not parse")
    assert callable(getattr(args, "func", None)), f"countersign {shlex.join(argv)} runs nothing"
    return args


def test_the_example_policy_loads() -> None:
    policy = load_policy(EXAMPLES / "policy.yaml", environ=ENVIRON)
    assert [s.name for s in policy.stages] == list(STAGES)
    assert policy.trust.server == ENVIRON["COUNTERSIGN_SERVER"]
    assert policy.deliver.require == STAGES and policy.deliver.min_distinct_signers == 3
    formats = {s.name: s.check.format for s in policy.stages}
    assert formats == {"static-tested": "sarif", "dynamic-tested": "json",
                       "fuzz-tested": "junit"}
    for stage in policy.stages:
        assert stage.key_file is not None
        assert stage.key_file.resolve() == (EXAMPLES / "keys" / f"{stage.name}.key").resolve()
        assert stage.role == f"targets/{stage.name}"
    assert policy.stage("dynamic-tested").check.command[0] == "./ci/dast.sh"
    assert (EXAMPLES / "dast.sh").stat().st_mode & 0o111


def test_the_fuzz_check_parses_with_the_harness() -> None:
    policy = load_policy(EXAMPLES / "policy.yaml", environ=ENVIRON)
    command = policy.stage("fuzz-tested").check.render(report="r.xml", image="x@sha256:0")
    assert list(command[:3]) == ["python", "-m", "countersign.assure.fuzzing"]
    args = fuzzing.build_parser().parse_args(list(command[3:]))
    assert args.report == Path("r.xml")
    assert [t.text for t in args.targets] == ["shop.records:parse"]
    assert args.runs == 2_000_000 and args.max_time == 300


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_every_countersign_command_in_the_pipeline_parses(name: str) -> None:
    document = yaml.safe_load((EXAMPLES / name).read_text())
    commands = _countersign_commands(_scripts(document))
    assert len(commands) >= 7
    policy = load_policy(EXAMPLES / "policy.yaml", environ=ENVIRON)
    assured: list[str] = []
    verified = rechecked = 0
    for argv in commands:
        args = _parse(argv)
        if argv[0] == "assure":
            assert args.policy == Path("ci/policy.yaml")
            for stage in args.stage:
                policy.stage(stage)  # the stage exists in the policy
            assured.extend(args.stage)
        elif argv[0] == "verify":
            if args.record is not None:
                rechecked += 1
            else:
                assert args.policy == Path("ci/policy.yaml") and args.json
                verified += 1
    # each stage runs once, in its own job, and the gate runs before the deploy
    assert sorted(assured) == sorted(STAGES)
    assert verified == 1 and rechecked == 1
    assert any(argv[:2] == ["push", "docker-archive:shop.tar"] and "--sign" in argv
               for argv in commands)


def test_every_countersign_command_in_the_readme_parses() -> None:
    commands = _countersign_commands(_readme_scripts())
    assert {argv[0] for argv in commands} >= {"trust", "key"}
    for argv in commands:
        _parse(argv)


def test_the_command_reader_sees_through_shell_syntax() -> None:
    text = ('A=1 B="x y" countersign verify "$IMAGE" --json > out.json && echo done\n'
            "countersign push a \\\n  b --sign  # trailing comment\n")
    assert _shell_commands(text) == [["countersign", "verify", "$IMAGE", "--json"],
                                     ["echo", "done"], ["countersign", "push", "a", "b",
                                                        "--sign"]]
    with pytest.raises(pytest.fail.Exception):
        _parse(["assure", "--no-such-flag"])
