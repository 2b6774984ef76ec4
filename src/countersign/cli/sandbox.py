"""``countersign sandbox up|down|status|demo``: the content-trust scenario on loopback.

``up`` starts ``countersign serve`` (SQLite) and a registry with fresh TLS
material and prints the ``export`` lines for the other commands; ``down``
stops exactly what ``up`` started; ``status`` says what runs where (exit 0 all
running, 3 otherwise); ``demo`` replays the scenario, each step checked (exit
1 naming the step that failed). See docs/sandbox.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from countersign.cli._common import emit

EXIT_NOT_RUNNING = 3


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("sandbox", help="the content-trust scenario on loopback: "
                            "up, down, status, demo")
    cmds = parser.add_subparsers(dest="sandbox_command", metavar="COMMAND", required=True)

    def common(name: str, text: str) -> argparse.ArgumentParser:
        cmd = cmds.add_parser(name, help=text, description=text)
        cmd.add_argument("--dir", type=Path, default=None,
                         help="the sandbox directory (env COUNTERSIGN_SANDBOX_DIR, default "
                         ".countersign-sandbox in the current directory)")
        return cmd

    up = common("up", "start the trust server and the registry; print the export lines")
    up.add_argument("--json", action="store_true")
    up.set_defaults(func=_up)
    down = common("down", "stop what up started (nothing else)")
    down.set_defaults(func=_down)
    status = common("status", "what runs where; exit 0 when everything runs, 3 otherwise")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
    demo = common("demo", "replay the content-trust scenario step by step (brings the "
                  "sandbox up, and down again, if it is not running)")
    demo.add_argument("--keep-up", action="store_true",
                      help="leave services this command started running afterwards")
    demo.set_defaults(func=_demo)


def _sandbox(args: argparse.Namespace) -> Any:
    from countersign.sandbox.services import Sandbox, default_dir

    return Sandbox(args.dir if args.dir is not None else default_dir())


def _up(args: argparse.Namespace) -> int:
    sandbox = _sandbox(args)
    started = sandbox.up()
    record = {"dir": str(sandbox.root), "started": started,
              "services": [s.to_dict() for s in sandbox.status()],
              "trust_server": sandbox.trust_url, "registry": sandbox.registry,
              "ca": str(sandbox.ca), "trust_dir": str(sandbox.trust_dir),
              "env": sandbox.env_lines()}

    def text(r: dict[str, Any]) -> str:
        lines = [f"started {', '.join(r['started'])}" if r["started"]
                 else "already running", *(
                     f"  {s['name']:<13} {s['address']}  (pid {s['pid']}, log {s['log']})"
                     for s in r["services"]),
                 "", "# for the other countersign commands:", *r["env"],
                 "# the notary CLI:  notary -c " + r["trust_dir"] + "/config.json ...",
                 f"# registry TLS:    --registry-ca {r['ca']}"]
        return "\n".join(lines)

    emit(record, args.json, text)
    return 0


def _down(args: argparse.Namespace) -> int:
    sandbox = _sandbox(args)
    for name, outcome in sandbox.down():
        detail = {"stale": "stale pid file removed; its process was already gone, "
                           "nothing signalled"}.get(outcome, outcome)
        print(f"{name}: {detail}")
    return 0


def _status(args: argparse.Namespace) -> int:
    sandbox = _sandbox(args)
    services = [s.to_dict() for s in sandbox.status()]
    record = {"dir": str(sandbox.root), "services": services}

    def text(r: dict[str, Any]) -> str:
        lines = [f"sandbox {r['dir']}"]
        for s in r["services"]:
            if s["state"] == "running":
                lines.append(f"  {s['name']:<13} running  {s['address']}  pid {s['pid']}")
            elif s["state"] == "stale":
                lines.append(f"  {s['name']:<13} STALE    pid file names pid {s['pid']}, "
                             "which is gone or another program now (countersign sandbox "
                             "down removes it)")
            else:
                lines.append(f"  {s['name']:<13} stopped")
        return "\n".join(lines)

    emit(record, args.json, text)
    return 0 if all(s["state"] == "running" for s in services) else EXIT_NOT_RUNNING


def _demo(args: argparse.Namespace) -> int:
    from countersign.sandbox import demo
    from countersign.sandbox.demo import StepFailed

    try:
        seconds = demo.run(_sandbox(args), sys.stdout, keep_up=args.keep_up)
    except StepFailed as exc:
        print(f"\nFAILED: {exc.message}", file=sys.stderr)
        return 1
    print(f"\nall steps passed in {seconds:.1f}s")
    return 0
