"""python-socketio client against `ferrio serve` (built-in join, leave and publish on /)."""

import uuid

import pytest

from conftest import TIMEOUT, TRANSPORTS


def barrier(*sockets):
    """Joining a throwaway room is a round trip: whatever was queued before it has arrived."""
    for s in sockets:
        assert s.call("join", f"barrier-{uuid.uuid4().hex[:8]}", timeout=TIMEOUT) == {"ok": True}


@pytest.mark.parametrize("transports", TRANSPORTS)
def test_connect(serve_server, clients, transports):
    c = clients.connect(serve_server.url, transports)
    assert c.connected
    assert c.transport() == transports[0]
    assert c.get_sid()


@pytest.mark.parametrize("transports", TRANSPORTS)
def test_join_publish_leave(serve_server, clients, room, transports):
    a = clients.connect(serve_server.url, transports, events=["chat"])
    b = clients.connect(serve_server.url, transports, events=["chat"])
    c = clients.connect(serve_server.url, transports, events=["chat"])
    outsider = clients.connect(serve_server.url, transports, events=["chat"])
    for s in (a, b, c):
        assert s.call("join", room, timeout=TIMEOUT) == {"ok": True}

    data = {"text": "hi", "list": [1, "two", None]}
    assert a.call("publish", {"room": room, "event": "chat", "data": data}, timeout=TIMEOUT) == {"ok": True}
    assert b.rec.wait("chat") == [data]
    assert c.rec.wait("chat") == [data]
    barrier(a, outsider)
    assert a.rec.of("chat") == [], "the sender does not get its own publish"
    assert outsider.rec.of("chat") == [], "non-members do not get it"

    assert c.call("leave", room, timeout=TIMEOUT) == {"ok": True}
    assert b.call("publish", {"room": room, "event": "chat", "data": 2}, timeout=TIMEOUT) == {"ok": True}
    assert a.rec.wait("chat") == [2]
    barrier(b, c)
    assert len(c.rec.of("chat")) == 1, "c left before the second publish"
    assert len(b.rec.of("chat")) == 1


@pytest.mark.parametrize("transports", TRANSPORTS)
@pytest.mark.parametrize("event,data", [
    ("join", 42),
    ("leave", 42),
    ("publish", {"event": "x", "data": 1}),
    ("publish", "not an object"),
    ("publish", 12),
])
def test_invalid_arguments(serve_server, clients, transports, event, data):
    s = clients.connect(serve_server.url, transports)
    res = s.call(event, data, timeout=TIMEOUT)
    assert res["ok"] is False
    assert isinstance(res["error"], str) and res["error"]
