"""``countersign webhook``: the gate as a Kubernetes admission webhook (docs/webhook.md)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from countersign.cli._common import resolve_trust_dir, trust_dir_option
from countersign.errors import CountersignError

MAX_CACHE_ENTRIES = 1_000_000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "webhook", help="serve the gate as a Kubernetes admission webhook (HTTPS)",
        description="Answer AdmissionReview v1 requests: every container image of Pods and "
        "of workload pod templates must pass the policy's gate. Fail-closed: any error "
        "denies. See docs/webhook.md.")
    parser.add_argument("--policy", type=Path, required=True, help="the policy file (YAML)")
    parser.add_argument("--listen", default="0.0.0.0:8443", metavar="HOST:PORT",
                        help="address to listen on (default 0.0.0.0:8443)")
    parser.add_argument("--tls-cert", type=Path, required=True,
                        help="PEM certificate chain the API server must trust (caBundle)")
    parser.add_argument("--tls-key", type=Path, required=True, help="PEM key of --tls-cert")
    parser.add_argument("--mode", choices=["validate", "mutate"], default="validate",
                        help="validate: serve POST /validate (allow or deny); mutate: also "
                        "POST /mutate, which denies the same and pins allowed tags to the "
                        "verified digests (default validate)")
    parser.add_argument("--fail-open", action="store_true",
                        help="DANGEROUS: admit an image unchecked (with a warning) when the "
                        "trust server or registry cannot be reached; verification failures "
                        "still deny")
    parser.add_argument("--cache-size", type=int, default=1024, metavar="N",
                        help="decisions kept, least recently used dropped first (default "
                        "1024; 0: no cache)")
    parser.add_argument("--cache-ttl", type=float, default=30.0, metavar="SECONDS",
                        help="how long a decision is reused (default 30; an allowed one never "
                        "past the moment a stage would turn stale)")
    parser.add_argument("--error-cache-ttl", type=float, default=1.0, metavar="SECONDS",
                        help="how long an error is reused (default 1, at most 10)")
    parser.add_argument("--timeout", type=float, default=8.0, metavar="SECONDS",
                        help="longest wait for one image's decision, and for each exchange "
                        "with a server; beyond it the image is denied (default 8, below "
                        "the API server's 10 s webhook timeout)")
    parser.add_argument("--max-body", type=int, default=8 * 1024 * 1024, metavar="BYTES",
                        help="largest AdmissionReview accepted (default 8 MiB)")
    parser.add_argument("--threads", type=int, default=8, metavar="N",
                        help="decisions made at the same time (default 8)")
    parser.add_argument("--registry-ca", type=Path, default=None,
                        help="PEM bundle trusted for the registries (default: system store)")
    parser.add_argument("--registry-insecure", action="store_true",
                        help="plain HTTP to a loopback registry (tests only)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        default="info", help="log level (JSON lines on stderr; one line "
                        "per review at info)")
    trust_dir_option(parser)
    parser.set_defaults(func=_webhook)


def _check(args: argparse.Namespace) -> None:
    for path in (args.tls_cert, args.tls_key):
        if not path.is_file():
            raise CountersignError(f"{path}: no such file")
    if not 0 <= args.cache_size <= MAX_CACHE_ENTRIES:
        raise CountersignError(f"--cache-size must be between 0 and {MAX_CACHE_ENTRIES}")
    if not all(0 <= ttl < math.inf for ttl in (args.cache_ttl, args.error_cache_ttl)):
        raise CountersignError("--cache-ttl and --error-cache-ttl must be finite numbers of "
                               "seconds, not negative")
    if not 0 < args.timeout <= 30:
        raise CountersignError("--timeout must be above 0 and at most 30 seconds",
                               advice="the API server waits at most 30 s for a webhook")
    if args.max_body < 1024:
        raise CountersignError("--max-body must be at least 1024 bytes")
    if not 1 <= args.threads <= 256:
        raise CountersignError("--threads must be between 1 and 256")
    if args.registry_ca is not None:  # at start-up, not as a denial of every image later
        from countersign.client.http import ssl_context

        try:
            ssl_context(args.registry_ca)
        except CountersignError as exc:
            raise CountersignError(f"--registry-ca: {exc.message}",
                                   advice="give --registry-ca a readable PEM file of the CA "
                                   "certificate(s) that issued the registries' certificates"
                                   ) from None


def _webhook(args: argparse.Namespace) -> int:
    from countersign.assure.policy import load_policy
    from countersign.assure.webhook import DecisionCache
    from countersign.assure.webhook_server import PolicyGate, WebhookApp
    from countersign.cli.serve import bind, run_app
    from countersign.server import logs

    _check(args)
    policy = load_policy(args.policy)
    listener = bind(args.listen)
    logs.configure(args.log_level)
    gate = PolicyGate(policy, resolve_trust_dir(args), registry_ca=args.registry_ca,
                      registry_insecure=args.registry_insecure, timeout=args.timeout)
    cache = DecisionCache(max_entries=args.cache_size, ttl=args.cache_ttl,
                          error_ttl=args.error_cache_ttl, max_age=policy.deliver.max_age)
    app = WebhookApp(gate, mutate=args.mode == "mutate", fail_open=args.fail_open, cache=cache,
                     max_body=args.max_body, timeout=args.timeout, workers=args.threads,
                     on_close=gate.close)
    run_app(app, listener, tls_cert=args.tls_cert, tls_key=args.tls_key)
    return 0
