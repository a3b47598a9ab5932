"""Fixtures: start the server under test as a child process and stop it (by PID) afterwards.

INTEROP_SERVER=ferrio (default): FERRIO_INTEROP_BIN, else <repo>/target/debug/interop-server
                                 FERRIO_BIN, else <repo>/target/debug/ferrio   (`ferrio serve`)
INTEROP_SERVER=node:             tests/interop/reference-server.js for both (needs `npm ci` in
                                 tests/interop)
"""

import atexit
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest
import socketio

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REFERENCE = os.path.join(REPO, "tests", "interop", "reference-server.js")
STARTUP_TIMEOUT = float(os.environ.get("INTEROP_STARTUP_TIMEOUT", "30"))
TIMEOUT = float(os.environ.get("INTEROP_TIMEOUT", "10"))
LISTENING = re.compile(r"^listening on 127\.0\.0\.1:(\d+)$")

_live = {}


def _kill_all():
    for pid in list(_live):
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        _live.pop(pid, None)


atexit.register(_kill_all)


def server_kind():
    kind = os.environ.get("INTEROP_SERVER", "ferrio").lower()
    if kind not in ("ferrio", "node"):
        raise RuntimeError(f'INTEROP_SERVER must be "ferrio" or "node", not "{kind}"')
    return kind


def _command(mode, args):
    kind = server_kind()
    if kind == "node":
        pre = ["serve"] if mode == "serve" else []
        return ["node", REFERENCE, *pre, "--listen", "127.0.0.1:0", *args]
    if mode == "serve":
        binary = os.environ.get("FERRIO_BIN") or os.path.join(REPO, "target", "debug", "ferrio")
        pre = ["serve"]
    else:
        binary = os.environ.get("FERRIO_INTEROP_BIN") or os.path.join(
            REPO, "target", "debug", "interop-server")
        pre = []
    if not os.path.exists(binary):
        raise RuntimeError(f"{binary} does not exist (build it, set the env variable, or use INTEROP_SERVER=node)")
    return [binary, *pre, "--listen", "127.0.0.1:0", *args]


class ServerProcess:
    def __init__(self, mode, args=()):
        self.cmd = _command(mode, [str(a) for a in args])
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self.stderr, text=True)
        self.pid = self.proc.pid
        _live[self.pid] = self
        lines = queue.Queue()

        def reader():
            for line in self.proc.stdout:
                lines.put(line.rstrip("\r\n"))
            lines.put(None)

        threading.Thread(target=reader, daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                line = None
                left = 0
            if line is not None:
                m = LISTENING.match(line)
                if m:
                    self.port = int(m.group(1))
                    self.url = f"http://127.0.0.1:{self.port}"
                    return
                continue
            self.stop()
            raise RuntimeError(
                f"server did not print 'listening on' ({'timeout' if left <= 0 else 'exited'})\n"
                f"command: {' '.join(self.cmd)}\nstderr:\n{self.stderr_text()}")

    def stderr_text(self):
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")[-8000:]

    def stop(self):
        if self.proc.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.kill(self.pid, sig)
                except OSError:
                    pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.proc.wait(timeout=5)
        _live.pop(self.pid, None)
        if self.proc.stdout:
            self.proc.stdout.close()


# python-engineio's polling client can lose its CLOSE packet on disconnect (its write loop checks
# the state before sending), and then waits for the pending GET to return with the next ping. A
# short ping interval bounds that wait.
SERVER_ARGS = ("--ping-interval", 2000, "--ping-timeout", 5000)


@pytest.fixture(scope="session")
def interop_server():
    server = ServerProcess("interop", SERVER_ARGS)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def serve_server():
    server = ServerProcess("serve", SERVER_ARGS)
    try:
        yield server
    finally:
        server.stop()


class Recorder:
    """Collects the events a client receives; wait() blocks (bounded) until one arrives."""

    def __init__(self):
        self.cond = threading.Condition()
        self.events = []

    def add(self, event, args):
        with self.cond:
            self.events.append((event, args))
            self.cond.notify_all()

    def of(self, event):
        with self.cond:
            return [a for (e, a) in self.events if e == event]

    def wait(self, event, count=1, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len([1 for (e, _) in self.events if e == event]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {count}x '{event}' within {timeout} s; got {self.events!r}")
                self.cond.wait(left)
            return [a for (e, a) in self.events if e == event][count - 1]


class Clients:
    """Creates python-socketio clients and disconnects them all at the end of a test."""

    def __init__(self):
        self.clients = []

    def connect(self, url, transports, auth=None, events=()):
        client = socketio.Client(reconnection=False, handle_sigint=False)
        client.rec = Recorder()
        for event in events:
            client.on(event, _recording_handler(client.rec, event))
        client.connect(url, transports=transports, auth=auth, wait_timeout=TIMEOUT)
        self.clients.append(client)
        return client

    def close(self):
        def disconnect(c):
            try:
                c.disconnect()
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass

        threads = [threading.Thread(target=disconnect, args=(c,), daemon=True) for c in self.clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=TIMEOUT)
        self.clients.clear()


def _recording_handler(rec, event):
    def handler(*args):
        rec.add(event, list(args))
    return handler


@pytest.fixture
def clients():
    c = Clients()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def room():
    return f"py-{uuid.uuid4().hex[:12]}"


TRANSPORTS = [pytest.param(["websocket"], id="websocket"), pytest.param(["polling"], id="polling")]


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test timeout (pytest-timeout)")
    sys.stderr.write(f"interop server: {server_kind()}\n")
