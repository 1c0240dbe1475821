"""The moderator console end to end, in a real browser: a mini worker and two consoles on the
real broker and S3-compatible server, clean and PGD-attacked mini scenes submitted, and
Debian's headless chromium (through its own chromedriver; nothing downloaded) watching the
alerts arrive live, revealing an input, dismissing one alert and confirming another. The
decisions are then read back from `labels` with a plain aiokafka consumer.

The screenshot the test takes is left at .run/console.png for people to look at.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from aiokafka import AIOKafkaConsumer
from urllib.request import Request, urlopen

from streamdetect.events import Upload, now_iso, validate
from streamdetect.events.topic_specs import load_specs
from streamdetect.stream.admin import apply_topics
from streamdetect.stream.clients import publish_uploads, reference_for
from tests.kafka_support import REPO, WorkerProcess, read_until

pytestmark = pytest.mark.kafka
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT = REPO / ".run" / "console.png"
WAIT_S = 120


class Console:
    """`streamdetect console` as a child process; ``url`` is the address it prints (with its token)."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self._log = open(log_path, "w+b")
        self.log_path = log_path
        self.proc = subprocess.Popen([sys.executable, "-m", "streamdetect.cli", "console", "--console-port", "0",
                                      *args], env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_url(self, timeout_s: float = 60) -> str:
        from tests.kafka_support import wait_until

        found: list[str] = []

        def printed() -> bool:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("console: open "):
                    found.append(line.split()[2])
                    return True
            assert self.proc.poll() is None, self.log_path.read_text()
            return False

        assert wait_until(printed, timeout_s), self.log_path.read_text()
        return found[0]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def api(url: str, path: str, token: str) -> Any:
    base = url.split("?")[0].rstrip("/")
    with urlopen(Request(base + path, headers={"Authorization": f"Bearer {token}"}), timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), "run `make browser` (Debian's chromium)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # As root in a sandbox-less container, and with no network beyond loopback: the flags keep
    # chromium from trying to reach Google's services at start.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1500"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def attacked_scenes(tmp_path: Path, n: int) -> tuple[list[Path], list[Path]]:
    """n clean mini test scenes and their eps 8/255 PGD copies, made by `streamdetect attack`."""
    out = tmp_path / "adv"
    subprocess.run([sys.executable, "-m", "streamdetect.cli", "attack", "--kind", "pgd", "--eps", "8", "--n", str(n),
                    "--out", str(out)], check=True, capture_output=True, timeout=600)
    return sorted((out / "clean").glob("*.png")), sorted((out / "attacked").glob("*.png"))


async def read_labels(bootstrap: str, topic: str, want: int, timeout_s: float) -> list[dict[str, Any]]:
    """The labels topic through a plain aiokafka consumer (not the project's client code)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    seen: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(seen) < want:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen += [{"key": r.key.decode(), **json.loads(r.value)} for r in records]
    finally:
        await consumer.stop()
    return seen


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamdetect.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def check_rescore_and_calibrate(env: dict[str, str], tmp_path: Path, verdicts: int,
                                dismissed: dict[str, float]) -> None:
    """`rescore --from-topic` brings every verdict of the audit topic back to its score from the
    evidence in S3; `calibrate --labels topic` fits on the dismissed alert alone."""
    rescored = cli(env, "rescore", "--from-topic", "--profile", "mini", "--json")
    assert rescored.returncode == 0, rescored.stdout + rescored.stderr
    rows = [json.loads(line) for line in rescored.stdout.splitlines()]
    assert len(rows) == verdicts and all(r["matches"] and r["image_from"] for r in rows), rows
    target = tmp_path / "threshold.json"
    fitted = cli(env, "calibrate", "--profile", "mini", "--labels", "topic", "--threshold-file", str(target))
    assert fitted.returncode == 0, fitted.stdout + fitted.stderr
    record = json.loads(target.read_text())
    assert "1 dismissed" in record["source"] and "1 confirmed" in record["source"], record["source"]
    assert record["n"] == 1 and record["threshold"] <= min(dismissed.values()) + 1e-9, record


async def test_console_shows_alerts_live_with_evidence_and_publishes_decisions(
        kafka_bootstrap: str, s3_server: str, tmp_path: Path, browser: Any) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    prefix = f"t{uuid.uuid4().hex[:8]}-"
    await apply_topics(kafka_bootstrap, load_specs(), prefix)
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="evidence")
    s3.create_bucket(Bucket="uploads")
    clean, attacked = attacked_scenes(tmp_path, 4)
    s3.put_object(Bucket="uploads", Key="clean-0.png", Body=clean[0].read_bytes())
    env = {**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap, "STREAMDETECT_TOPIC_PREFIX": prefix,
           "STREAMDETECT_GROUP_ID": f"{prefix}workers", "STREAMDETECT_S3_ENDPOINT": s3_server,
           "STREAMDETECT_EVIDENCE_STORE": "s3://evidence/alerts", "STREAMDETECT_EVIDENCE_OF": "all",
           "STREAMDETECT_LOG_JSON": "true"}
    worker = WorkerProcess(env, tmp_path / "worker.log", "--profile", "mini", "--threshold", "0.8",
                           "--max-wait-ms", "20", "--metrics-port", "0")
    tokens = {"alice": "alice-" + uuid.uuid4().hex, "bob": "bob-" + uuid.uuid4().hex}
    consoles = {name: Console({**env, "STREAMDETECT_CONSOLE_TOKEN": token}, tmp_path / f"console-{name}.log",
                              "--moderator", name, "--claim-timeout-s", "600") for name, token in tokens.items()}
    try:
        alice_url, bob_url = consoles["alice"].wait_url(), consoles["bob"].wait_url()
        browser.get(alice_url)  # ?token= becomes a cookie; the page is then at / without it
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "status").text == "live")
        assert "token" not in browser.current_url

        uploads = [Upload(upload_id=f"clean-{i}", image="s3://uploads/clean-0.png" if i == 0 else reference_for(str(p)),
                          submitted_at=now_iso(), metadata={"user": f"user-{i}", "kind": "clean"})
                   for i, p in enumerate(clean)]
        uploads += [Upload(upload_id=f"attacked-{i}", image=reference_for(str(p)), submitted_at=now_iso(),
                           metadata={"user": f"user-{i}", "kind": "attacked", "note": "<script>alert(1)</script>"})
                    for i, p in enumerate(attacked)]
        await publish_uploads(kafka_bootstrap, f"{prefix}uploads", uploads, [u.upload_id for u in uploads])
        audit = await read_until(kafka_bootstrap, f"{prefix}audit", lambda seen: len(seen) >= len(uploads), WAIT_S)
        assert len(audit) == len(uploads), worker.log_tail()
        for verdict in audit:
            validate("verdict", verdict)
        by_id = {v["upload_id"]: v for v in audit}
        assert by_id["clean-0"]["image"]["reference"] == "s3://uploads/clean-0.png"
        assert by_id["clean-1"]["image"]["reference"] is None and by_id["clean-1"]["image"]["inline"] is True
        assert by_id["attacked-0"]["metadata"]["kind"] == "attacked"
        assert not any(by_id[f"clean-{i}"]["flagged"] for i in range(len(clean))), [v["score"] for v in audit]
        flagged = [v for v in audit if v["flagged"]]
        assert len(flagged) >= 2, f"the attack should get at least two alerts: {[v['score'] for v in audit]}"
        for verdict in flagged:  # the evidence is in the bucket, byte for byte as described
            for kind in ("input", "regenerated"):
                stored = verdict["evidence"][kind]
                body = s3.get_object(Bucket="evidence", Key="alerts/" + stored["key"])["Body"].read()
                assert len(body) == stored["size"] and stored["key"].endswith(stored["sha256"] + ".png")

        def cards(d: Any) -> dict[str, Any]:
            return {c.get_attribute("data-upload-id"): c for c in d.find_elements(By.CSS_SELECTOR, "article.alert")}

        def part(d: Any, upload_id: str, selector: str) -> Any:
            return cards(d)[upload_id].find_element(By.CSS_SELECTOR, selector)

        def until(condition: Any, timeout_s: float = 30) -> Any:
            # A card is drawn anew when its alert changes: every look finds it again, and a
            # reference that went stale in between is looked up once more, not a failure.
            return WebDriverWait(browser, timeout_s, ignored_exceptions=(StaleElementReferenceException,)).until(
                condition)

        def click(upload_id: str, selector: str) -> None:
            until(lambda d: part(d, upload_id, selector).click() or True)

        def state(upload_id: str) -> str:
            return cards(browser)[upload_id].get_attribute("data-state")

        until(lambda d: len(cards(d)) == len(flagged), 60)  # live, no reload
        first, second = flagged[0]["upload_id"], flagged[1]["upload_id"]
        until(lambda d: d.execute_script(
            "const card = [...document.querySelectorAll('article.alert')].find(c => c.dataset.uploadId === arguments[0]);"
            "return card.querySelector('.input-img').naturalWidth > 0 && card.querySelector('.regen-img').naturalWidth > 0",
            first))
        assert "blurred" in part(browser, first, ".input-img").get_attribute("class")
        assert "<script>" in part(browser, first, ".metadata").text  # shown as text, not run
        click(first, ".reveal")
        until(lambda d: state(first) == "claimed")
        assert "blurred" not in part(browser, first, ".input-img").get_attribute("class")

        # The other console shows it as claimed by alice, not undecided, and may not decide it.
        bob_view = {a["verdict"]["upload_id"]: a for a in api(bob_url, "/api/alerts", tokens["bob"])["alerts"]}
        assert bob_view[first]["state"] == "claimed" and bob_view[first]["claim"]["moderator"] == "alice"
        assert bob_view[second]["state"] == "undecided"
        open_to_bob = api(bob_url, "/api/alerts?state=open", tokens["bob"])["alerts"]
        assert first not in {a["verdict"]["upload_id"] for a in open_to_bob}

        SCREENSHOT.parent.mkdir(exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))
        # A note being typed survives the page's periodic refresh: the same field, the same text.
        note = until(lambda d: part(d, first, ".note"))
        note.send_keys("the caption fits the picture")
        reloads = int(browser.find_element(By.ID, "alerts").get_attribute("data-reloads"))
        until(lambda d: int(d.find_element(By.ID, "alerts").get_attribute("data-reloads")) > reloads, 20)
        assert note.get_attribute("value") == "the caption fits the picture"
        click(first, ".dismiss")
        until(lambda d: state(first) == "dismissed")
        click(second, ".confirm")
        until(lambda d: state(second) == "confirmed")
        assert browser.find_element(By.ID, "histogram").get_attribute("data-verdicts") == str(len(uploads))
        browser.save_screenshot(str(tmp_path / "decided.png"))

        labels = await read_labels(kafka_bootstrap, f"{prefix}labels", 2, 30)
        assert {(lab["key"], lab["decision"], lab["moderator"]) for lab in labels} == {
            (first, "dismissed", "alice"), (second, "confirmed", "alice")}
        for label in labels:
            validate("label", {k: v for k, v in label.items() if k != "key"})
            assert label["verdict"]["score"] == by_id[label["upload_id"]]["score"]
        assert next(lab for lab in labels if lab["decision"] == "dismissed")["note"] == "the caption fits the picture"
        bob_view = {a["verdict"]["upload_id"]: a for a in api(bob_url, "/api/alerts", tokens["bob"])["alerts"]}
        assert (bob_view[first]["state"], bob_view[second]["state"]) == ("dismissed", "confirmed")
        check_rescore_and_calibrate(env, tmp_path, len(uploads), {first: by_id[first]["score"]})
    finally:
        for c in consoles.values():
            c.stop()
        worker.terminate()
        if SCREENSHOT.exists():
            shutil.copy(SCREENSHOT, tmp_path / "console.png")
