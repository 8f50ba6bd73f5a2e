"""`python -m coin_scale.testing.fakeserver --provider openai --port 0 --latency 0.3 --policy finish`:
serve a fake provider until killed, after printing one line `READY <base_url>`.

The expected API key, if any, is read from the environment variable `--api-key-env` names (a key
on the command line would show in the process list).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from coin_scale.testing.fakeserver import POLICIES
from coin_scale.testing.fakeserver.faults import FAULT_NAMES, Faults
from coin_scale.testing.fakeserver.server import WIRES, FakeProviderServer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m coin_scale.testing.fakeserver", description=__doc__)
    p.add_argument("--provider", required=True, choices=sorted(WIRES))
    p.add_argument("--port", type=int, default=0, help="0: any free port (default)")
    p.add_argument("--policy", default="finish", choices=sorted(POLICIES))
    p.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    p.add_argument("--jitter", type=float, default=0.0, help="up to this many seconds more")
    p.add_argument("--p-rate-limit", type=float, default=0.0)
    p.add_argument("--retry-after", type=float, default=1.0, help="seconds a 429 asks to wait")
    p.add_argument("--p-server-error", type=float, default=0.0)
    p.add_argument("--server-error-status", type=int, default=500)
    p.add_argument("--p-malformed", type=float, default=0.0)
    p.add_argument(
        "--script",
        default="",
        help=f"comma-separated faults of the first requests ({', '.join(FAULT_NAMES)}, none)",
    )
    p.add_argument(
        "--spend-limit", action="store_true", help="answer every request with a 429 quota error"
    )
    p.add_argument("--rpm-limit", type=int, default=None, help="429 above this many requests/60 s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-prompt-cache", dest="prompt_caching", action="store_false",
        help="bill every input token at the full price (no prompt-cache simulation: less CPU)",
    )  # fmt: skip
    p.add_argument(
        "--api-key-env", default=None, help="environment variable holding the expected key"
    )
    return p


def faults_from(args: argparse.Namespace) -> Faults:
    script = tuple(
        None if s.strip() in ("", "none") else s.strip()
        for s in args.script.split(",")
        if args.script
    )
    return Faults(
        latency_s=args.latency,
        jitter_s=args.jitter,
        p_rate_limit=args.p_rate_limit,
        retry_after_s=args.retry_after,
        p_server_error=args.p_server_error,
        server_error_status=args.server_error_status,
        p_malformed=args.p_malformed,
        script=script,
        spend_limit=args.spend_limit,
        rpm_limit=args.rpm_limit,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(f"environment variable {args.api_key_env} is not set", file=sys.stderr)
            return 2
    try:
        faults = faults_from(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with FakeProviderServer(
        args.provider,
        POLICIES[args.policy](),
        faults=faults,
        api_key=api_key,
        port=args.port,
        prompt_caching=args.prompt_caching,
    ) as server:
        print(f"READY {server.base_url}", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
