"""Fuzz the HTTP API from its own OpenAPI document (schemathesis + hypothesis).

A real daemon serves ``/v1/openapi.json``; every documented operation is called with
generated valid and invalid requests under three credentials: an admin token, a
normal user's token (a few ACL grants, scopes ``publish`` and ``subscribe``) and none.
Every response must be: not a 5xx; documented (status code and content type, and the
body's schema where the document gives one); and every 4xx must carry notifyd's
JSON error shape ``{"error": {"code": str, "message": str}}``.

The run is reproducible (``derandomize``); ``NOTIFYD_FUZZ_EXAMPLES=200`` (examples per
operation, generation mode and credential) explores longer locally.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from conftest import Daemon
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = int(os.environ.get("NOTIFYD_FUZZ_EXAMPLES", "8"))

ADMIN = "fuzzadmin"
USER = "fuzzuser"
USER_GRANTS = {"fuzz/*": "rw", "news": "read", "alerts/*": "write"}
KINDS = ("admin", "user", "anonymous")

#: Calls that may take the fuzzing credentials away when they succeed: the fixture
#: checks them afterwards and recreates what is gone.
DESTRUCTIVE = {
    "DELETE /v1/users/{name}",
    "DELETE /v1/tokens/{token_id}",
    "DELETE /v1/acl",
    "POST /v1/admin/import",
}

#: Operations that answer with a stream that never ends once authenticated; the
#: stream tests (tests/test_streams.py) cover them. Unauthenticated calls still run.
ENDLESS = {"GET /v1/stream/sse"}


@schemathesis.serializer("application/x-ndjson")
def _json_lines(ctx: schemathesis.SerializationContext, value: object) -> bytes:
    """``POST /v1/admin/import`` takes JSON Lines: one generated value per line."""
    items = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


# the check of the error shape ------------------------------------------------


def error_shape(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx is JSON ``{"error": {"code": str, "message": str, "field"?: str}}``."""
    if not 400 <= response.status_code < 500:
        return None
    ctype = response.headers.get("content-type", [""])[0]
    assert ctype.split(";")[0].strip() == "application/json", (
        f"{response.status_code} with content type {ctype!r}"
    )
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, f"not an error object: {body!r}"
    err = body["error"]
    assert isinstance(err, dict), f"error is not an object: {body!r}"
    assert isinstance(err.get("code"), str) and err["code"], f"no error code: {body!r}"
    assert isinstance(err.get("message"), str) and err["message"], f"no message: {body!r}"
    assert set(err) <= {"code", "message", "field"}, f"unexpected keys: {body!r}"
    if "field" in err:
        assert isinstance(err["field"], str), f"field is not a string: {body!r}"
    return None


def no_server_error(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> None:
    assert response.status_code < 500, (
        f"{response.status_code} from {case.method} {case.formatted_path}: {response.text[:500]}"
    )
    return None


POSITIVE_CHECKS = [
    no_server_error,
    error_shape,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
NEGATIVE_CHECKS = [*POSITIVE_CHECKS, negative_data_rejection]


# the daemon and its credentials ---------------------------------------------------


@dataclass
class Fuzzed:
    daemon: Daemon
    schema: schemathesis.BaseSchema
    tokens: dict[str, str] = field(default_factory=dict)
    session: requests.Session = field(default_factory=requests.Session)
    restored: int = 0

    def provision(self) -> None:
        """(Re)create the fuzzing users, their grants and tokens: the admin token may
        revoke itself, delete its user or import data, so this runs whenever a token
        stops working."""
        with self.daemon.admin() as c:
            for name, role in ((ADMIN, "admin"), (USER, "user")):
                r = c.post("/v1/users", json={"name": name, "role": role})
                assert r.status_code in (201, 409), r.text
            for pattern, perm in USER_GRANTS.items():
                r = c.post("/v1/acl", json={"user": USER, "pattern": pattern, "permission": perm})
                assert r.status_code in (201, 409), r.text
            for kind, body in (
                ("admin", {"user": ADMIN}),
                ("user", {"user": USER, "scopes": ["publish", "subscribe"]}),
            ):
                r = c.post("/v1/tokens", json={**body, "label": "fuzz"})
                assert r.status_code == 201, r.text
                self.tokens[kind] = r.json()["token"]

    def healthy(self) -> bool:
        with self.daemon.admin() as c:
            grants = c.get("/v1/acl", params={"user": USER})
        if grants.status_code != 200 or len(grants.json()["acl"]) != len(USER_GRANTS):
            return False
        for kind, token in self.tokens.items():
            with self.daemon.http(token) as c:
                me = c.get("/v1/me")
            if me.status_code != 200 or me.json()["role"] != (
                "admin" if kind == "admin" else "user"
            ):
                return False
        return True

    def restore(self) -> None:
        if not self.healthy():
            self.restored += 1
            with self.daemon.admin() as c:
                for name in (ADMIN, USER):
                    c.delete(f"/v1/users/{name}")
            self.provision()

    def headers(self, kind: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[kind]}"} if kind in self.tokens else {}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    data = Path(tmp_path_factory.mktemp("fuzz")) / "data"
    data.mkdir()
    daemon = Daemon(data).start()
    try:
        schema = schemathesis.openapi.from_url(daemon.url + "/v1/openapi.json")
        f = Fuzzed(daemon, schema)
        f.provision()
        # something to find, read and click on
        for topic in ("fuzz/a", "news", "other"):
            daemon.publish(topic, body="seed")
        yield f
    finally:
        daemon.stop()
        log = daemon.log()
        assert "Traceback" not in log, log[-4000:]


def operations(schema: schemathesis.BaseSchema) -> list[schemathesis.APIOperation]:
    return [result.ok() for result in schema.get_all_operations()]


def fuzz(fuzzed: Fuzzed, kind: str, op: schemathesis.APIOperation, mode: GenerationMode,
         statuses: Counter[int]) -> None:  # fmt: skip
    """Run one operation's generated cases in one generation mode under one credential."""
    checks = POSITIVE_CHECKS if mode == GenerationMode.POSITIVE else NEGATIVE_CHECKS

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        headers = fuzzed.headers(kind)
        if kind == "anonymous" and case.headers:
            case.headers = {k: v for k, v in case.headers.items() if k.lower() != "authorization"}
        response = case.call(
            base_url=fuzzed.daemon.url, session=fuzzed.session, headers=headers, timeout=20
        )
        statuses[response.status_code] += 1
        if op.label in DESTRUCTIVE and response.status_code < 300:
            fuzzed.restore()
        case.validate_response(response, checks=checks, headers=headers)

    run()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", KINDS)
def test_fuzz_every_operation(fuzzed: Fuzzed, kind: str) -> None:
    started = time.monotonic()
    failures: list[str] = []
    skipped: list[str] = []
    statuses: Counter[int] = Counter()
    ops = operations(fuzzed.schema)
    assert len(ops) >= 40, [op.label for op in ops]
    for op in ops:
        if kind != "anonymous" and op.label in ENDLESS:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(fuzzed, kind, op, mode, statuses)
            except Unsatisfiable:
                # nothing to generate: no parameters to break (negative mode)
                skipped.append(f"{op.label} [{mode.value}]")
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - reported below
                failures.append(f"{op.label} [{mode.value}]: {exc}")
    elapsed = time.monotonic() - started
    print(f"\n{kind}: {len(ops)} operations, {sum(statuses.values())} calls, {elapsed:.1f}s, "
          f"restored credentials {fuzzed.restored}×; nothing to generate for {len(skipped)}; "
          f"statuses {dict(sorted(statuses.items()))}")  # fmt: skip
    assert not failures, "\n\n".join(failures)


# regressions: what the fuzzer found, as plain examples ---------------------------------

HUGE = 2**70


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/v1/events?since={HUGE}"),
        ("GET", f"/v1/events?before={HUGE}"),
        ("DELETE", f"/v1/tokens/{HUGE}"),
        ("POST", f"/v1/deliveries/{HUGE}/retry"),
        ("GET", f"/v1/admin/export?since={HUGE}"),
        ("GET", f"/v1/events/{HUGE}"),
    ],
)
def test_ids_beyond_64_bits_are_invalid_not_internal_errors(
    fuzzed: Fuzzed, method: str, path: str
) -> None:
    with fuzzed.daemon.http(fuzzed.tokens["admin"]) as c:
        r = c.request(method, path)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "invalid"


def test_openapi_documents_the_error_shape(fuzzed: Fuzzed) -> None:
    doc = httpx.get(fuzzed.daemon.url + "/v1/openapi.json").json()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    error = doc["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["code", "message"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert {"422", "4XX"} <= set(op["responses"]), (method, path)
            for status, response in op["responses"].items():
                if status[0] in "45":
                    media = response["content"]["application/json"]
                    assert media["schema"] == {"$ref": "#/components/schemas/Error"}, (
                        method, path, status,
                    )  # fmt: skip
    # JSON answers are documented as JSON values, not strings; /metrics as text
    me = doc["paths"]["/v1/me"]["get"]["responses"]["200"]["content"]["application/json"]
    assert me["schema"].get("type") != "string"
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
