"""Integration fixtures: a real ``tallyd`` for the session.

The binary is ``$TALLYD`` or ``<repo>/target/debug/tallyd``. It is started
with ``--data-dir <tmp> --listen 127.0.0.1:0 --metrics off``; its stdout line
``tallyd listening on ADDR`` gives the port. Without a binary the integration
tests are skipped (the codec tests need no server).
"""

import itertools
import os
import re
import signal
import subprocess
import threading
import time

import pytest
import pytest_asyncio

from tally_client import connect

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))


def tallyd_path() -> str:
    return os.environ.get("TALLYD") or os.path.join(REPO, "target", "debug", "tallyd")


class Server:
    def __init__(self, proc, address, data_dir, log_path):
        self.proc, self.address, self.data_dir, self.log_path = proc, address, data_dir, log_path

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    binary = tallyd_path()
    if not os.path.exists(binary):
        if os.environ.get("REQUIRE_TALLYD"):
            pytest.fail(f"no tallyd at {binary}, and REQUIRE_TALLYD is set (CI)")
        pytest.skip(f"no tallyd at {binary} (set TALLYD)")
    data_dir = tmp_path_factory.mktemp("tally-data")
    os.chmod(data_dir, 0o700)
    log_path = str(data_dir) + ".stderr"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [binary, "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--metrics", "off"],
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
    )
    found = {}
    ready = threading.Event()

    def read_stdout():
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            m = re.search(r"tallyd listening on (\S+)", line)
            if m and "address" not in found:
                found["address"] = m.group(1)
                ready.set()
        ready.set()

    threading.Thread(target=read_stdout, daemon=True).start()
    ready.wait(60)
    srv = Server(proc, found.get("address"), str(data_dir), log_path)
    if srv.address is None:
        proc.kill()
        proc.wait()
        pytest.fail(f"tallyd did not say where it listens; its stderr:\n{srv.log()}")
    yield srv
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest_asyncio.fixture(loop_scope="session")
async def client(server):
    async with connect(server.address, data_dir=server.data_dir) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="session")
async def reader(server):
    async with connect(server.address, data_dir=server.data_dir, reader=True) as c:
        yield c


_ids = itertools.count(1_000_000)
_codes = itertools.count(1)


@pytest.fixture
def new_id():
    return lambda: next(_ids)


@pytest.fixture
def new_currency():
    return lambda: f"T{next(_codes)}"
