"""The console's rules without a broker: who holds a claim, what each console offers, filters,
the histogram, the token and origin gate, and what the routes refuse. The routes run on
Starlette's test client over a feed stand-in that applies what would be published straight to
the state (the Kafka feed itself is exercised by tests/test_console_browser.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from streamdetect.console.app import ConsoleConfig, Hub, build_app
from streamdetect.console.feed import claim_event, label_event
from streamdetect.console.guard import COOKIE
from streamdetect.console.serve import ConsoleError, allowed_hosts, check_exposure, read_token
from streamdetect.console.state import Filters, ReviewState
from streamdetect.events import format_time, validate
from streamdetect.evidence import LocalStore

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
SHA = "a" * 64


def verdict(upload_id: str, score: float, flagged: bool, decided: datetime = T0, key: str | None = None) -> dict:
    stored = {"key": key, "sha256": SHA, "size": 3, "media_type": "image/png"}
    return {"upload_id": upload_id, "score": score, "flagged": flagged, "threshold": 0.8, "decided_at":
            format_time(decided), "models": {"generator": "g", "encoders": ["e"], "captioner": "c"},
            "evidence": {"input": stored, "regenerated": None}, "schema_version": 2}


def claim(console: str, upload_id: str, at: datetime, minutes: float = 5, released: bool = False) -> dict:
    return {"schema_version": 1, "upload_id": upload_id, "moderator": console.upper(), "console": console,
            "claimed_at": format_time(at), "expires_at": format_time(at + timedelta(minutes=minutes)),
            **({"released": True} if released else {})}


def test_the_first_claim_in_the_log_holds_the_alert_until_it_expires() -> None:
    state = ReviewState("a")
    state.add_verdict(verdict("u1", 0.3, True))
    state.add_claim(claim("a", "u1", T0))
    state.add_claim(claim("b", "u1", T0 + timedelta(seconds=1)))  # made while a held it: loses
    assert state.holder("u1", T0 + timedelta(minutes=1)).console == "a"
    assert state.state_of("u1", T0 + timedelta(minutes=1)) == "claimed"
    assert state.holder("u1", T0 + timedelta(minutes=6)) is None  # expired: undecided again
    state.add_claim(claim("b", "u1", T0 + timedelta(minutes=6)))
    assert state.holder("u1", T0 + timedelta(minutes=7)).console == "b"
    state.add_claim(claim("a", "u1", T0 + timedelta(minutes=7), released=True))  # not a's to release
    assert state.holder("u1", T0 + timedelta(minutes=7)).console == "b"
    state.add_claim(claim("b", "u1", T0 + timedelta(minutes=8), released=True))
    assert state.holder("u1", T0 + timedelta(minutes=8)) is None


def test_two_consoles_reading_the_same_log_agree_and_do_not_both_offer_an_alert() -> None:
    log = [claim("a", "u1", T0), claim("b", "u1", T0)]  # claimed in the same millisecond
    views = {}
    for name in ("a", "b"):
        state = ReviewState(name)
        state.add_verdict(verdict("u1", 0.3, True))
        for event in log:
            state.add_claim(event)
        views[name] = [v["verdict"]["upload_id"] for v in state.alerts(Filters(state="open"), T0)]
    assert views == {"a": ["u1"], "b": []}


def test_a_decision_is_the_latest_label_and_filters_select_by_state_score_and_time() -> None:
    state = ReviewState("a")
    for i, score in enumerate((0.1, 0.5, 0.7)):
        state.add_verdict(verdict(f"u{i}", score, True, T0 + timedelta(minutes=i)))
    state.add_verdict(verdict("clean", 0.95, False))
    state.add_label({"upload_id": "u0", "decision": "confirmed", "moderator": "m", "decided_at": "x"})
    state.add_label({"upload_id": "u0", "decision": "dismissed", "moderator": "m", "decided_at": "y"})
    ids = lambda f: [v["verdict"]["upload_id"] for v in state.alerts(f, T0)]  # noqa: E731
    assert ids(Filters()) == ["u2", "u1", "u0"]  # newest first, the clean verdict is no alert
    assert ids(Filters(state="dismissed")) == ["u0"]
    assert ids(Filters(state="undecided")) == ["u2", "u1"]
    assert ids(Filters(min_score=0.4, max_score=0.6)) == ["u1"]
    assert ids(Filters(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=2))) == ["u1"]


def test_the_histogram_counts_clean_and_flagged_apart_with_the_threshold() -> None:
    state = ReviewState("a")
    for score in (0.9, 0.92, 0.95):
        state.add_verdict(verdict(f"c{score}", score, False))
    state.add_verdict(verdict("f", 0.2, True))
    state.add_verdict(verdict("f", 0.2, True))  # the same alert from audit and alerts counts once
    h = state.histogram(bins=10)
    assert (sum(h["clean"]), sum(h["flagged"]), h["threshold"], h["verdicts"]) == (3, 1, 0.8, 4)
    assert h["low"] <= 0.2 and h["high"] >= 0.95


def test_not_a_finite_score_is_ignored_and_old_alerts_drop_their_evidence_keys() -> None:
    state = ReviewState("a", max_alerts=1)
    assert not state.add_verdict(verdict("nan", float("nan"), True))
    state.add_verdict(verdict("u1", 0.1, True, key=f"input/{SHA}.png"))
    assert state.keys[f"input/{SHA}.png"] == 1
    state.add_verdict(verdict("u2", 0.1, True, key=None))
    assert state.alert("u1") is None and state.keys[f"input/{SHA}.png"] == 0


def test_label_and_claim_events_match_their_schemas() -> None:
    state = ReviewState("console-x")
    validate("claim", claim_event(state, "u1", "alice", 300))
    validate("claim", claim_event(state, "u1", "alice", 300, released=True))
    validate("label", label_event(verdict("u1", 0.3, True), "confirmed", "alice", "a note", "console-x"))


class StandInFeed:
    """What Feed gives the app: the state, caught_up, and publish (applied straight to the state)."""

    def __init__(self, state: ReviewState) -> None:
        import asyncio

        self.state, self.caught_up, self.published = state, asyncio.Event(), []

    async def publish(self, kind: str, event: dict[str, Any]) -> None:
        validate(kind, event)
        self.published.append((kind, event))
        (self.state.add_claim if kind == "claim" else self.state.add_label)(event)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "evidence")


def client(store: LocalStore, token: str | None = None, console: str = "me") -> tuple[TestClient, StandInFeed]:
    state = ReviewState(console)
    feed = StandInFeed(state)
    config = ConsoleConfig("alice", 300, token, ["testserver"])
    return TestClient(build_app(feed, Hub(), store, config)), feed  # type: ignore[arg-type]


CHANGE = {"X-Streamdetect-Console": "1"}


def test_decisions_go_out_for_known_alerts_and_not_over_another_consoles_claim(store: LocalStore) -> None:
    http, feed = client(store)
    feed.state.add_verdict(verdict("u1", 0.3, True))
    feed.state.add_verdict(verdict("u2", 0.3, True))
    feed.state.add_claim(claim("other", "u2", datetime.now(timezone.utc)))
    def decide(upload_id: str, decision: str, **more: str) -> Any:
        return http.post("/api/decision", json={"upload_id": upload_id, "decision": decision, **more}, headers=CHANGE)

    assert decide("nope", "confirmed").status_code == 404
    assert decide("u1", "maybe").status_code == 400
    assert decide("u2", "dismissed").status_code == 409  # alice's console does not hold it
    assert http.post("/api/claim", json={"upload_id": "u2"}, headers=CHANGE).status_code == 409
    answer = decide("u1", "dismissed", note="fine")
    assert answer.status_code == 200 and answer.json()["state"] == "dismissed"
    assert [(k, e["upload_id"], e["decision"], e["moderator"]) for k, e in feed.published] == [
        ("label", "u1", "dismissed", "alice")]
    assert http.get("/api/alerts", params={"min_score": "nan"}).status_code == 400


def test_changes_need_the_consoles_header_and_the_same_origin(store: LocalStore) -> None:
    http, feed = client(store)
    feed.state.add_verdict(verdict("u1", 0.3, True))
    assert http.post("/api/claim", json={"upload_id": "u1"}).status_code == 403  # a cross-site form cannot set it
    evil = {**CHANGE, "Origin": "http://evil.example"}
    assert http.post("/api/claim", json={"upload_id": "u1"}, headers=evil).status_code == 403
    assert http.post("/api/claim", json={"upload_id": "u1"}, headers=CHANGE).status_code == 200
    assert not [e for k, e in feed.published if k == "label"]


def test_with_a_token_every_request_needs_it_and_the_page_sets_a_cookie(store: LocalStore) -> None:
    http, _ = client(store, token="s3cret-token-0123456789")
    for path in ("/", "/api/alerts", "/api/histogram", "/static/console.js", f"/evidence/input/{SHA}.png"):
        assert http.get(path).status_code == 401, path
    assert http.get("/api/me", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert http.get("/?token=wrong", follow_redirects=False).status_code == 401
    login = http.get("/?token=s3cret-token-0123456789", follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/"
    assert "HttpOnly" in login.headers["set-cookie"] and "SameSite=Strict" in login.headers["set-cookie"]
    http.cookies.set(COOKIE, "s3cret-token-0123456789")
    assert http.get("/api/me").status_code == 200
    http.cookies.clear()
    assert http.get("/api/me", headers={"Authorization": "Bearer s3cret-token-0123456789"}).status_code == 200


def test_pages_carry_a_strict_content_policy(store: LocalStore) -> None:
    http, _ = client(store)
    page = http.get("/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    assert http.get("/api/me", headers={"Host": "evil.example"}).status_code == 400  # DNS rebinding


def test_evidence_is_served_only_for_keys_of_known_alerts_from_the_store(store: LocalStore) -> None:
    stored = store.put("input", b"\x89PNG fake")
    other = store.put("regenerated", b"\x89PNG other")
    http, feed = client(store)
    feed.state.add_verdict(verdict("u1", 0.3, True, key=stored.key))
    assert http.get(f"/evidence/{stored.key}").content == b"\x89PNG fake"
    assert http.get(f"/evidence/{other.key}").status_code == 404  # in the store, but no alert names it
    for path in ("/evidence/input/..%2F..%2Fetc%2Fpasswd", "/evidence/input/x.png", "/evidence/../../etc/passwd"):
        assert http.get(path).status_code == 404, path


def test_off_loopback_the_console_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ConsoleError, match="not loopback"):
        check_exposure("0.0.0.0", None)
    with pytest.raises(ConsoleError, match="not loopback"):
        check_exposure("192.0.2.7", None)
    check_exposure("0.0.0.0", "t" * 32)
    check_exposure("127.0.0.1", None)
    check_exposure("::1", None)
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ConsoleError, match="shorter"):
        read_token("", short)
    good = tmp_path / "token"
    good.write_text("x" * 40 + "\nignored\n")
    assert read_token("", good) == "x" * 40 and read_token("env-wins", good) == "env-wins"
    assert read_token("", None) is None
    assert "localhost" in allowed_hosts("127.0.0.1") and allowed_hosts("10.1.2.3") == ["10.1.2.3"]
