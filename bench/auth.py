"""What a JWT costs: ``POST /v1/events`` authenticated with a JWT against an ``nfy_`` token.

Issue 16's target: a JWT-authenticated publish costs no more than 10 % over an
``nfy_`` token. One daemon trusts an RS256 key (``jwt_public_key_file``; a JWK set
over HTTP gives the same figure once fetched, since the keys are cached); the
same user publishes through a notifyd token (its ACL row) and through a JWT (the
grant in its claim). The closed-loop load generator of ``bench/publish.py`` drives
both, from separate processes, alternating in rounds so background load hits
both alike; ``publish_rate`` is off so that the limiter does not decide the figure.

A verified JWT's principal is remembered until it expires (or 30 s, or an account
change), so a client reusing its token pays for the signature once; the last
row measures that first check in process (RS256 and EdDSA, no network), which is
what a client presenting a new token on every request would pay each time.

Run:  .venv/bin/python bench/auth.py [--clients 16] [--duration 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
    Daemon,
    cores_note,
    idle_check,
    print_table,
    request,
    write_result,
)
from publish import SINGLE_EVENT, build_request, run_segment  # noqa: E402

ISSUER, AUDIENCE = "https://idp.bench.test", "notifyd-bench"
TARGET_OVERHEAD = 0.10


def mint(key: Any, alg: str, subject: str, lifetime: float = 3600) -> str:
    import warnings

    from joserfc import jwt

    now = int(time.time())
    claims = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + lifetime,
        "notifyd": {"write": ["bench.*"]},
    }  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc: "EdDSA is deprecated via RFC 9864"
        return jwt.encode({"alg": alg}, claims, key, algorithms=[alg])


def first_check_cost(n: int = 300) -> list[list[Any]]:
    """Microseconds per first check of a new token, in process (no cache)."""
    import trio
    from joserfc.jwk import OKPKey, RSAKey

    from notifyd.core.jwt import JwtVerifier

    rows = []
    for label, key, alg in (
        ("RS256 (2048-bit)", RSAKey.generate_key(2048), "RS256"),
        ("EdDSA (Ed25519)", OKPKey.generate_key("Ed25519"), "EdDSA"),
    ):
        verifier = JwtVerifier(ISSUER, AUDIENCE, 30, key=key)
        tokens = [mint(key, alg, f"user{i}") for i in range(n)]

        async def run(verifier: JwtVerifier = verifier, tokens: list[str] = tokens) -> float:
            t0 = time.perf_counter()
            for token in tokens:
                await verifier.verify(token)
            return time.perf_counter() - t0

        seconds = trio.run(run)
        rows.append([f"first check of a new JWT, {label}", f"{seconds / n * 1e6:,.0f} µs", ""])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--procs", type=int, default=1)
    args = ap.parse_args()

    from joserfc.jwk import RSAKey

    idle = idle_check()
    key = RSAKey.generate_key(2048)
    keydir = Path(tempfile.mkdtemp(prefix="notifyd-bench-auth-"))
    pem = keydir / "issuer.pem"
    pem.write_bytes(key.as_pem(private=False))
    env = {
        "NOTIFYD_JWT_ISSUER": ISSUER,
        "NOTIFYD_JWT_AUDIENCE": AUDIENCE,
        "NOTIFYD_JWT_PUBLIC_KEY_FILE": str(pem),
        "NOTIFYD_PUBLISH_RATE": "0",
    }
    body = json.dumps(SINGLE_EVENT).encode()
    segments: dict[str, list[dict[str, Any]]] = {"nfy_ token": [], "JWT (RS256)": []}
    with Daemon(env) as d:
        sock = d.socket_path
        for path, payload in (
            ("/v1/users", {"name": "bench", "role": "user"}),
            ("/v1/acl", {"user": "bench", "pattern": "bench.*", "permission": "write"}),
        ):
            status, answer = request("POST", path, unix=sock, body=payload)
            if status != 201:
                raise RuntimeError(f"{path}: {status} {answer!r}")
        status, answer = request(
            "POST", "/v1/tokens", unix=sock, body={"user": "bench", "scopes": ["publish"]}
        )
        if status != 201:
            raise RuntimeError(f"creating a token failed: {status} {answer!r}")
        credentials = {"nfy_ token": answer["token"], "JWT (RS256)": mint(key, "RS256", "bench")}
        for label, token in credentials.items():  # each is accepted before it is measured
            status, answer = request(
                "POST", "/v1/events", tcp=d.addr, token=token, body=SINGLE_EVENT
            )
            if status != 201:
                raise RuntimeError(f"{label}: a publish answered {status} {answer!r}")
        for r in range(args.rounds):
            order = list(credentials) if r % 2 == 0 else list(reversed(credentials))
            for label in order:
                req = build_request(d.addr, credentials[label], body)
                segments[label].append(
                    run_segment(
                        f"{label} (round {r + 1})", d.pid, d.addr, req, args.clients,
                        args.procs, args.warmup, args.duration,
                    )
                )  # fmt: skip

    results: dict[str, Any] = {}
    for label, segs in segments.items():
        completed = sum(s["completed"] for s in segs)
        seconds = sum(s["duration"] for s in segs)
        cpu = sum(s["server_cpu_s"] for s in segs)
        ok = sum(s["statuses"].get(201, 0) for s in segs)
        if ok != completed:
            raise RuntimeError(
                f"{label}: {completed - ok} answers were not 201: {segs[0]['statuses']}"
            )
        results[label] = {
            "req_s": completed / seconds,
            "server_cpu_ms_per_req": cpu / completed * 1e3 if completed else float("nan"),
        }
    base, jwt = results["nfy_ token"], results["JWT (RS256)"]
    overhead = base["req_s"] / jwt["req_s"] - 1  # cost per publish, from throughput
    rows = [
        [label, f"{r['req_s']:,.0f} req/s", f"{r['server_cpu_ms_per_req']:.3f} ms"]
        for label, r in results.items()
    ]
    cpu_overhead = jwt["server_cpu_ms_per_req"] / base["server_cpu_ms_per_req"] - 1
    verdict = "met" if overhead <= TARGET_OVERHEAD else "missed"
    rows.append(
        [
            "JWT cost over nfy_ (target ≤ 10 %)",
            f"{overhead * 100:+.1f} % ({verdict})",
            f"{cpu_overhead * 100:+.1f} %",
        ]
    )
    rows += first_check_cost()
    print_table(
        ["case", "throughput / cost", "server CPU per publish"],
        rows,
        title=(
            f"POST /v1/events, {args.clients} keep-alive clients, {args.rounds} round(s) of "
            f"{args.duration:g} s per case; cores busy with other work before: {idle:.2f}"
        ),
    )
    print(cores_note())
    write_result(
        "auth",
        {
            "args": vars(args),
            "results": results,
            "overhead": overhead,
            "cpu_overhead": cpu_overhead,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
