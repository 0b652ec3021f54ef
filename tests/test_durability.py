"""Durability against a real daemon: what survives a restart, what survives SIGKILL
in the middle of concurrent publishing (every acknowledged event, byte for byte),
and group commit batching concurrent publishers into one transaction."""

from __future__ import annotations

import random
import threading
from typing import Any

import httpx
import pytest
from conftest import Daemon, wait_for

# Characters that tend to get mangled somewhere between JSON, Python and SQLite.
ALPHABET = (
    "abcXYZ019 _-.,;:!?"
    "\"'\\/<>&%$#@{}[]()`~^|+=*"
    "\t\n\r"
    "éßøÅçñ"
    "Ωжлю"
    "漢字かなカナ한국어"
    "🙂🚀👩‍💻🏳️‍🌈"
    "\u200b\u200d\u202e\ufeff"
    "𝔘𝔫𝔦"
)


def text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def history(client: httpx.Client, **params: Any) -> list[dict]:
    """Every event in the caller's history, newest first, paged with ``before=``."""
    events: list[dict] = []
    before: int | None = None
    while True:
        query = {"limit": 500, **params}
        if before is not None:
            query["before"] = before
        r = client.get("/v1/events", params=query)
        assert r.status_code == 200, r.text
        page = r.json()
        events += page["events"]
        if page["next"] is None:
            break
        before = page["next"]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, reverse=True), "history is not newest first"
    assert len(ids) == len(set(ids)), "an event id occurs twice"
    return events


def admin_history(daemon: Daemon) -> list[dict]:
    with daemon.admin(timeout=30) as c:
        return history(c, archived="include")


def metric_samples(daemon: Daemon) -> dict[str, float]:
    with daemon.admin() as c:
        r = c.get("/metrics")
    assert r.status_code == 200
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# -- restart ------------------------------------------------------------------------


def test_restart_keeps_events_users_tokens_acl_and_read_state(daemon: Daemon) -> None:
    rng = random.Random(7)
    token = daemon.user("erin", grants={"home/*": "rw"})
    with daemon.admin() as c:
        r = c.post("/v1/tokens", json={"user": "erin", "label": "old phone"})
        assert r.status_code == 201, r.text
        revoked = r.json()
        assert c.delete(f"/v1/tokens/{revoked['id']}").status_code == 204

    sent = [
        {"topic": f"home/{t}", "title": text(rng, 40), "body": text(rng, 600), "priority": p}
        for t, p in (("door", 5), ("door", 3), ("garden", 1), ("kitchen", 4), ("door", 2))
    ]
    with daemon.http(token) as c:
        r = c.post("/v1/events", json=sent)
        assert r.status_code == 201, r.text
        stored = r.json()["events"]
        ids = [e["id"] for e in stored]
        for path in (f"{ids[1]}/read", f"{ids[2]}/seen", f"{ids[3]}/archive"):
            assert c.post(f"/v1/events/{path}").status_code == 200
    with daemon.admin() as c:
        assert c.post("/v1/inbox/read-all").status_code == 200  # the admin's watermark

    def snapshot() -> dict[str, Any]:
        with daemon.http(token) as c:
            erin = history(c, archived="include")
            me = c.get("/v1/me").json()
        with daemon.admin() as c:
            return {
                "erin": erin,
                "me": me,
                "admin": history(c, archived="include"),
                "users": c.get("/v1/users").json(),
                # last_used_at moves whenever a token is used (this snapshot uses erin's)
                "tokens": [
                    {k: v for k, v in t.items() if k != "last_used_at"}
                    for t in c.get("/v1/tokens").json()["tokens"]
                ],
                "acl": c.get("/v1/acl").json(),
            }

    before = snapshot()
    by_id = {e["id"]: e for e in before["erin"]}
    assert [by_id[i]["read"] for i in ids] == [False, True, False, False, False]
    assert [by_id[i]["seen"] for i in ids] == [False, True, True, False, False]
    assert [by_id[i]["archived"] for i in ids] == [False, False, False, True, False]
    assert all(e["read"] for e in before["admin"])
    for s, e in zip(sent, reversed(before["erin"]), strict=True):
        assert (e["topic"], e["title"], e["body"]) == (s["topic"], s["title"], s["body"])

    daemon.restart()

    assert snapshot() == before
    with daemon.http(revoked["token"]) as c:
        assert c.get("/v1/events").status_code == 401
    # ids continue after the restart: never reused
    with daemon.http(token) as c:
        r = c.post("/v1/events", json={"topic": "home/door", "title": "after restart"})
        assert r.status_code == 201, r.text
        assert r.json()["id"] > max(ids)
    daemon.restart()
    assert daemon.publish("home/door", title="again")["id"] > r.json()["id"]


# -- SIGKILL --------------------------------------------------------------------------


class Publishers:
    """Threads publishing single events and small batches until the daemon dies,
    recording every event acknowledged with a 201: (what was sent, what was stored)."""

    def __init__(self, daemon: Daemon, token: str, cycle: int, n: int = 8) -> None:
        self.daemon, self.token, self.cycle = daemon, token, cycle
        self.acked: list[tuple[dict, dict]] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(n)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join(30)
            assert not t.is_alive(), "a publisher thread did not stop"

    def _run(self, worker: int) -> None:
        rng = random.Random(1000 * self.cycle + worker)
        # half over TCP with a token, half over the Unix socket as the admin
        if worker % 2:
            client = self.daemon.http(self.token, timeout=10)
        else:
            client = self.daemon.admin(timeout=10)
        with client:
            seq = 0
            while True:
                size = rng.choice([1, 1, 1, 2, 3, 5])
                events = []
                for _ in range(size):
                    events.append(
                        {
                            "topic": f"dur/c{self.cycle}/w{worker}",
                            "title": f"{self.cycle}.{worker}.{seq} "
                            + text(rng, rng.randint(0, 80)),
                            "body": text(rng, rng.randint(0, 1500)),
                            "priority": rng.randint(1, 5),
                        }
                    )
                    seq += 1
                payload: Any = events if size > 1 else events[0]
                try:
                    r = client.post("/v1/events", json=payload)
                except httpx.TransportError:
                    return  # the daemon died under us: this one was not acknowledged
                if r.status_code != 201:
                    with self.lock:
                        self.errors.append(f"{r.status_code}: {r.text}")
                    return
                stored = r.json()["events"] if size > 1 else [r.json()]
                with self.lock:
                    self.acked.extend(zip(events, stored, strict=True))


@pytest.mark.slow
def test_sigkill_during_concurrent_publishing_keeps_every_acknowledged_event(
    daemon: Daemon,
) -> None:
    token = daemon.user("pub", grants={"dur/*": "rw"})
    acked: list[tuple[dict, dict]] = []
    for cycle in range(3):
        floor = max((e["id"] for e in admin_history(daemon)), default=0)
        pubs = Publishers(daemon, token, cycle)
        pubs.start()
        try:
            wait_for(lambda p=pubs: len(p.acked) >= 300, 60, message="300 acknowledged events")
        finally:
            daemon.kill()  # SIGKILL mid-flight
            pubs.join()
        assert not pubs.errors, pubs.errors[:3]
        assert len(pubs.acked) >= 300
        ack_ids = [stored["id"] for _, stored in pubs.acked]
        assert len(set(ack_ids)) == len(ack_ids), "an id was acknowledged twice"
        assert min(ack_ids) > floor, "an id from before the restart was reused"
        acked += pubs.acked

        daemon.start()
        found = {e["id"]: e for e in admin_history(daemon)}
        missing = [stored["id"] for _, stored in acked if stored["id"] not in found]
        assert not missing, (
            f"cycle {cycle}: {len(missing)} acknowledged events lost: {missing[:10]}"
        )
        for sent, stored in acked:
            got = found[stored["id"]]
            for field in ("topic", "title", "body"):
                assert got[field].encode() == sent[field].encode(), (stored["id"], field)
            assert {k: got[k] for k in stored} == stored, stored["id"]

    # after the last restart, new ids still go up
    assert daemon.publish("dur/after", title="x")["id"] > max(found)


# -- group commit ---------------------------------------------------------------------


def test_concurrent_publishers_share_group_commits(daemon: Daemon) -> None:
    n_threads, per_thread = 32, 10
    name = "notifyd_commit_batch_jobs"
    before = metric_samples(daemon)
    barrier = threading.Barrier(n_threads)
    failures: list[str] = []

    def worker(i: int) -> None:
        with daemon.admin(timeout=30) as c:
            barrier.wait(10)
            for k in range(per_thread):
                r = c.post("/v1/events", json={"topic": f"gc/{i}", "title": f"{i}.{k}"})
                if r.status_code != 201:
                    failures.append(r.text)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:3]
    after = metric_samples(daemon)

    jobs = after[name + "_sum"] - before[name + "_sum"]
    groups = after[name + "_count"] - before[name + "_count"]
    singles = after[name + '_bucket{le="1.0"}'] - before[name + '_bucket{le="1.0"}']
    assert jobs >= n_threads * per_thread
    assert jobs / groups > 1, (jobs, groups)
    assert groups - singles > 0, "no group commit held more than one job"
    with daemon.admin() as c:
        assert len(history(c, topic="gc/*")) == n_threads * per_thread
