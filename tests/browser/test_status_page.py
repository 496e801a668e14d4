"""tallyd's live status page (issue 17, item 5), in Chromium.

The page is one HTML file served at the metrics address's ``/``; its script
reads ``/metrics`` every second. The test drives a real server under load and
asserts what a person would see: committed operations per second above zero,
latency percentiles, log sync figures, a queue per shard, the hot accounts of
the load, events by state, and the verifier's verdict, with no error banner.
"""

import os
import re
import subprocess
import tempfile
import threading
import time

import pytest

TALLYD = os.environ.get("TALLYD", "")
BENCH = os.environ.get("TALLY_BENCH", "")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def need(path, what):
    if not os.path.exists(path):
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(f"no {what} at {path!r}, and REQUIRE_BROWSER is set (CI)")
        pytest.skip(f"no {what} at {path!r}")


@pytest.fixture
def server():
    need(TALLYD, "tallyd")
    need(BENCH, "tally-bench")
    need(CHROMIUM, "Chromium")
    data = tempfile.mkdtemp(prefix="tally-status-")
    os.chmod(data, 0o700)
    proc = subprocess.Popen(
        [TALLYD, "--data-dir", data, "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
         "--shards", "2", "--verify-every", "1s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    found, lines = {}, []
    ready = threading.Event()

    def read(stream, key, pattern):
        for line in stream:
            lines.append(line)
            m = re.search(pattern, line)
            if m and key not in found:
                found[key] = m.group(1)
                if len(found) == 2:
                    ready.set()
        ready.set()

    threading.Thread(target=read, args=(proc.stdout, "addr", r"tallyd listening on (\S+)"), daemon=True).start()
    threading.Thread(target=read, args=(proc.stderr, "metrics", r"metrics on http://([^/\s]+)/"), daemon=True).start()
    ready.wait(60)
    if len(found) < 2:
        proc.kill()
        pytest.fail("tallyd did not start: " + "".join(lines))
    yield found["addr"], found["metrics"], data
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_the_status_page_shows_the_server_live(server):
    from playwright.sync_api import sync_playwright

    addr, metrics, data = server
    load = subprocess.Popen(
        [BENCH, "--server", addr, "--data-dir", data, "--shards", "2", "--rate", "400",
         "--duration", "25", "--workload", "zipf", "--accounts", "1000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://{metrics}/")
            assert page.title() == "tallyd status"
            # Live: the committed rate moves off zero while the load runs.
            page.wait_for_function(
                "() => Number((document.getElementById('ops').textContent || '').replace(/,/g, '')) > 0",
                timeout=20_000,
            )
            page.wait_for_function("() => document.getElementById('verdict').textContent === 'clean'",
                                   timeout=20_000)
            text = lambda sel: page.locator(sel).inner_text()
            assert re.fullmatch(r"[\d.]+ (µs|ms|s)", text("#p99")), text("#p99")
            assert re.fullmatch(r"[\d.]+ (µs|ms|s)", text("#p50")), text("#p50")
            assert re.fullmatch(r"([\d.]+ (µs|ms|s)( / )?){3}", text("#syncq")), text("#syncq")
            assert text("#syncmax") != "–"
            queues = text("#queues")
            assert "shard 0 queue" in queues and "shard 1 queue" in queues, queues
            assert "account " in text("#hot") and "writes" in text("#hot"), text("#hot")
            events = text("#events")
            for state in ["created", "running", "completed", "compensated"]:
                assert state in events, events
            assert text("#rss").endswith("iB"), text("#rss")
            assert not page.locator("#error").is_visible(), text("#error")
            samples = int(page.evaluate("document.body.dataset.samples"))
            time.sleep(1.5)
            assert int(page.evaluate("document.body.dataset.samples")) > samples, "it keeps refreshing"
            assert errors == [], errors
            shot = os.environ.get("SCREENSHOT")
            if shot:
                time.sleep(float(os.environ.get("SCREENSHOT_AFTER", "0")))
                page.screenshot(path=shot)
            browser.close()
    finally:
        load.kill()
        load.wait()


def test_unknown_paths_are_404_and_metrics_stay_text(server):
    import urllib.error
    import urllib.request

    _, metrics, _ = server
    with urllib.request.urlopen(f"http://{metrics}/metrics") as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        assert b"tally_next_sequence" in r.read()
    with urllib.request.urlopen(f"http://{metrics}/") as r:
        assert r.headers["Content-Type"].startswith("text/html")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://{metrics}/nope")
    assert e.value.code == 404


def test_the_grafana_dashboard_uses_only_metrics_tallyd_exports(server):
    """docs/grafana/tallyd-dashboard.json: every metric an expression names is
    one tallyd declares (a `# TYPE` line; counters carry `_total`,
    histograms `_bucket`)."""
    import json
    import urllib.request

    _, metrics, _ = server
    with urllib.request.urlopen(f"http://{metrics}/metrics") as r:
        page = r.read().decode()
    declared = set(re.findall(r"^# TYPE (\w+) ", page, re.M))
    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "grafana", "tallyd-dashboard.json")
    with open(path, encoding="utf-8") as f:
        board = json.load(f)
    used = set()
    for panel in board["panels"]:
        for target in panel["targets"]:
            used.update(re.findall(r"\btally_\w+", target["expr"]))
    assert used, "the dashboard names no metric"
    for name in sorted(used):
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert name in declared or base in declared, f"{name} is not exported by tallyd"
