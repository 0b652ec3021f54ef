"""Crash safety: SIGKILL the daemon at random moments, again and again, while
publishers publish concurrently (single events, lists, ntfy's ``POST /<topic>``)
and the delivery worker sends Web Push notifications to a real push service.

After every restart each acknowledged event is stored exactly as acknowledged
and ids are never reused. At the end, after a last start without kills, every
delivery of every stored event has reached the push service at least once, and
the repeats stay within the at-least-once bound of docs/operations.md: a send is
repeated only if a crash caught it in flight (between the start of the send and
the commit of its outcome), so each kill repeats at most ``MAX_IN_FLIGHT`` sends,
and a delivery is sent at most once more than the number of kills that caught it
in flight.

The kill moments come from a seeded RNG: the seed is printed, and
``NOTIFYD_CRASH_SEED=<seed>`` replays the same choices (the timing of the
daemon itself of course varies).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from conftest import Daemon, wait_for
from pushservice import PushService

from notifyd.core.outbox import CLAIM_BATCH

KILLS = 24
#: the outbox's in-flight cap: max(CLAIM_BATCH, the sum of the channel kinds'
#: concurrency limits: webpush 32, apprise 8); see notifyd/core/outbox.py
MAX_IN_FLIGHT = max(CLAIM_BATCH, 32 + 8)
#: requests per publisher per cycle: keeps the total (and the final drain) modest
REQUESTS = 12
TEXT = "abc XYZ 019 _-.,;:!? \"'\\/<>&%{}[] \t\n éßøÅ жлю 漢字かな 🙂🚀👩‍💻 \u200b\u202e 𝔘𝔫"


def text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(TEXT) for _ in range(n))


class Publishers:
    """Threads publishing until the daemon dies or their budget is spent; each
    acknowledged event is recorded with what was sent and what the 201 said."""

    def __init__(self, daemon: Daemon, token: str, rng: random.Random, cycle: int) -> None:
        self.daemon, self.token, self.cycle = daemon, token, cycle
        self.seeds = [rng.randrange(2**32) for _ in range(4)]
        self.acked: list[dict] = []  # the 201 bodies of /v1/events
        self.ntfy: list[tuple[dict, dict]] = []  # (what was sent, ntfy's answer)
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(4)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def done(self) -> bool:
        return not any(t.is_alive() for t in self.threads)

    def join(self) -> None:
        for t in self.threads:
            t.join(30)
            assert not t.is_alive(), "a publisher thread did not stop"

    def _run(self, worker: int) -> None:
        rng = random.Random(self.seeds[worker])
        # 0, 1: the Unix socket as the admin; 2: TCP with a token; 3: ntfy's door
        client = self.daemon.http(self.token) if worker == 2 else self.daemon.admin()
        with client:
            for seq in range(REQUESTS):
                try:
                    if worker == 3:
                        self._ntfy(client, rng, seq)
                    else:
                        self._events(client, rng, worker, seq)
                except httpx.TransportError:
                    return  # the daemon died under us: not acknowledged
                except AssertionError as exc:
                    with self.lock:
                        self.errors.append(str(exc))
                    return

    def _events(self, client: httpx.Client, rng: random.Random, worker: int, seq: int) -> None:
        size = rng.choice([1, 1, 2, 3, 5])
        events = [
            {
                "topic": f"crash/c{self.cycle}/w{worker}",
                "title": f"{self.cycle}.{worker}.{seq}.{k} " + text(rng, rng.randint(0, 40)),
                "body": text(rng, rng.randint(0, 600)),
                "priority": rng.randint(1, 5),
                "tags": [f"w{worker}", f"s{seq}"],
                "sensitive": rng.random() < 0.1,
            }
            for k in range(size)
        ]
        r = client.post("/v1/events", json=events if size > 1 else events[0])
        assert r.status_code == 201, f"{r.status_code}: {r.text}"
        stored = r.json()["events"] if size > 1 else [r.json()]
        for sent, got in zip(events, stored, strict=True):
            assert (got["title"], got["body"]) == (sent["title"], sent["body"]), got["id"]
        with self.lock:
            self.acked += stored

    def _ntfy(self, client: httpx.Client, rng: random.Random, seq: int) -> None:
        sent = {"topic": "crash-ntfy", "title": f"ntfy {self.cycle}.{seq}",
                "body": text(rng, rng.randint(1, 300)).strip() or "x"}  # fmt: skip
        r = client.post("/crash-ntfy", content=sent["body"].encode(),
                        headers={"Title": sent["title"]})  # fmt: skip
        assert r.status_code == 200, f"{r.status_code}: {r.text}"
        with self.lock:
            self.ntfy.append((sent, r.json()))


def sending(push: PushService, before: int, timeout: float = 5.0) -> None:
    """Return once the push service got a push after the first ``before`` (or after
    ``timeout``: on a starved machine the niced worker may not get going; the kill
    then just lands elsewhere)."""
    deadline = time.monotonic() + timeout
    while len(push.received()) <= before and time.monotonic() < deadline:
        time.sleep(0.01)


def truncated(p: Any) -> bool:
    return len(p.body) < int(p.headers.get("content-length") or 0)


def history_since(daemon: Daemon, floor: int) -> dict[int, dict]:
    found: dict[int, dict] = {}
    before = None
    with daemon.admin(timeout=30) as c:
        while True:
            params: dict[str, Any] = {"limit": 500, "since": floor, "archived": "include"}
            if before is not None:
                params["before"] = before
            r = c.get("/v1/events", params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            found.update((e["id"], e) for e in page["events"])
            if page["next"] is None:
                return found
            before = page["next"]


@pytest.mark.slow
@pytest.mark.timeout(600)  # ~60–90 s on a quiet 2-core machine
def test_sigkill_at_random_moments_loses_no_event_and_no_delivery(make_daemon: Any) -> None:
    seed = int(os.environ.get("NOTIFYD_CRASH_SEED") or random.randrange(2**32))
    print(f"crash test seed: {seed} (replay with NOTIFYD_CRASH_SEED={seed})")
    rng = random.Random(seed)
    daemon = make_daemon().start()
    with PushService() as push:
        try:
            _run(daemon, push, rng)
        except AssertionError as exc:
            raise AssertionError(f"[NOTIFYD_CRASH_SEED={seed}] {exc}") from exc


def _run(daemon: Daemon, push: PushService, rng: random.Random) -> None:
    token = daemon.user("pub", grants={"crash*": "rw"})
    subscribing = ["publish", "subscribe", "account"]  # a push subscription needs 'account'
    phone = daemon.user("phone", grants={"crash*": "read"}, scopes=subscribing)
    with daemon.http(phone) as c:
        push.vapid_public_key = c.get("/v1/webpush/vapid-public-key").json()["public_key"]
        subs = [push.subscribe(), push.subscribe()]  # two browsers: two deliveries per event
        for sub in subs:
            assert c.post("/v1/webpush/subscriptions", json=sub.info()).status_code == 201

    acked: dict[int, dict] = {}
    ntfy: list[tuple[dict, dict]] = []
    started = time.monotonic()
    start_seconds: list[float] = []
    floor = max(history_since(daemon, 0), default=0)
    for cycle in range(KILLS):
        pubs = Publishers(daemon, token, rng, cycle)
        pushes_before = len(push.received())
        pubs.start()
        try:
            if rng.random() < 0.4:  # while publishing (the worker may not be up yet)
                time.sleep(rng.uniform(0.0, 0.4))
            else:  # while the worker sends (the backlog of earlier cycles, this one's)
                sending(push, pushes_before)
                time.sleep(rng.uniform(0.0, 0.2))
        finally:
            daemon.kill()
            pubs.join()
        assert not pubs.errors, pubs.errors[:3]
        new_ids = [e["id"] for e in pubs.acked] + [int(m["id"]) for _, m in pubs.ntfy]
        assert all(i > floor for i in new_ids), f"cycle {cycle}: an id was reused"
        assert not set(new_ids) & set(acked), f"cycle {cycle}: an id was acknowledged twice"
        assert len(set(new_ids)) == len(new_ids), f"cycle {cycle}: an id acknowledged twice"
        acked.update((e["id"], e) for e in pubs.acked)
        ntfy += pubs.ntfy

        t0 = time.monotonic()
        daemon.start(timeout=60)
        start_seconds.append(time.monotonic() - t0)
        found = history_since(daemon, floor)
        for e in pubs.acked:
            assert e["id"] in found, f"cycle {cycle}: acknowledged event {e['id']} lost"
            got = found[e["id"]]
            assert {k: got[k] for k in e} == e, f"cycle {cycle}: event {e['id']} differs"
        floor = max(found, default=floor)
    kill_seconds = time.monotonic() - started

    # -- the last start: nothing is lost, nothing is changed ---------------------------
    with daemon.admin(timeout=30) as c:
        for e in acked.values():
            r = c.get(f"/v1/events/{e['id']}")
            assert r.status_code == 200, r.text
            got = r.json()
            assert {k: got[k] for k in e} == e, f"event {e['id']} differs after the last start"
        for sent, msg in ntfy:
            got = c.get(f"/v1/events/{msg['id']}").json()
            assert (got["topic"], got["title"], got["body"]) == (sent["topic"], sent["title"],
                                                                 sent["body"]), msg["id"]  # fmt: skip
            assert (msg["title"], msg["message"]) == (sent["title"], sent["body"]), msg["id"]
    stored = history_since(daemon, 0)
    assert set(acked) <= set(stored)
    # a new id still goes up
    assert daemon.publish("crash/after", title="after")["id"] > max(stored)
    stored = history_since(daemon, 0)

    # -- every delivery of every stored event goes out, repeats within the bound -------
    def counts() -> Counter[tuple[str, int]]:
        return Counter(
            (p.subscription, p.payload["id"]) for p in push.received() if p.status == 201 and p.payload
        )  # fmt: skip

    expected = {(s.id, i) for s in subs for i in stored}

    def all_delivered() -> bool:
        return expected <= set(counts())

    wait_for(all_delivered, 180, interval=0.2, message="every delivery to reach the push service")

    def none_pending() -> bool:
        # a push that reached the service just before a kill is sent again after the
        # restart (at least once): its row is pending until that second send is recorded
        with daemon.admin() as c:
            r = c.get("/v1/deliveries", params={"state": "pending", "limit": 1})
            return r.json()["deliveries"] == []

    wait_for(none_pending, 60, interval=0.2, message="no delivery left pending")
    with daemon.admin() as c:
        assert (
            c.get("/v1/deliveries", params={"state": "dead", "limit": 1}).json()["deliveries"] == []
        )
    # A push cut off by the kill arrives truncated (the service cannot decrypt it,
    # as a real one could not); anything else it rejected is a bug.
    rejected = [p for p in push.received() if p.status != 201 and not truncated(p)]
    assert not rejected, rejected[0].error
    got = counts()
    assert set(got) == expected, "a push for an event that is not stored"
    repeats = {key: n - 1 for key, n in got.items() if n > 1}
    total = sum(repeats.values())
    print(
        f"crash test: {KILLS} kills in {kill_seconds:.0f} s, {len(stored)} events stored "
        f"({len(acked) + len(ntfy)} acknowledged), {len(expected)} deliveries, "
        f"{total} repeated sends on {len(repeats)} deliveries (at most "
        f"{max(repeats.values(), default=0)} for one; bound {KILLS * MAX_IN_FLIGHT}); "
        f"a restart took {sum(start_seconds) / len(start_seconds):.2f} s on average"
    )
    assert max(repeats.values(), default=0) <= KILLS
    assert total <= KILLS * MAX_IN_FLIGHT, f"{total} repeated sends for {KILLS} kills"
