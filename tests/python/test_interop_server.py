"""python-socketio client against the interop-server contract (examples/interop-server/README.md)."""

import pytest

from conftest import TIMEOUT, TRANSPORTS


@pytest.mark.parametrize("transports", TRANSPORTS)
def test_connect_and_auth_payload(interop_server, clients, transports):
    c = clients.connect(interop_server.url, transports, auth={"token": "py", "n": 1}, events=["auth"])
    assert c.connected
    assert c.transport() == transports[0]
    assert c.rec.wait("auth") == [{"token": "py", "n": 1}]


@pytest.mark.parametrize("transports", TRANSPORTS)
def test_message_and_message_back(interop_server, clients, transports):
    c = clients.connect(interop_server.url, transports, events=["message-back"])
    c.emit("message", (1, "two", {"three": [3, True, None]}, "üñí✓"))
    assert c.rec.wait("message-back") == [1, "two", {"three": [3, True, None]}, "üñí✓"]
    c.emit("message", b"\x00\x01\x02\xff")
    assert c.rec.wait("message-back", count=2) == [b"\x00\x01\x02\xff"]
    assert c.transport() == transports[0]


@pytest.mark.parametrize("transports", TRANSPORTS)
def test_ack_from_server(interop_server, clients, transports):
    c = clients.connect(interop_server.url, transports)
    assert c.call("message-with-ack", "single", timeout=TIMEOUT) == "single"
    assert c.call("message-with-ack", (1, "2", {"3": [False]}), timeout=TIMEOUT) == (1, "2", {"3": [False]})
    assert c.call("message-with-ack", {"bin": b"\x01\x02\x03"}, timeout=TIMEOUT) == {"bin": b"\x01\x02\x03"}


@pytest.mark.parametrize("transports", TRANSPORTS)
def test_ack_from_client_via_call_client(interop_server, clients, transports):
    c = clients.connect(interop_server.url, transports)
    seen = []

    @c.on("question")
    def question(a, b):
        seen.append((a, b))
        return {"sum": a + b}

    assert c.call("call-client", ("question", 20, 22), timeout=TIMEOUT) == {"sum": 42}
    assert seen == [(20, 22)]


@pytest.mark.parametrize("transports", TRANSPORTS)
def test_rooms_join_publish_leave(interop_server, clients, room, transports):
    a = clients.connect(interop_server.url, transports, events=["news"])
    b = clients.connect(interop_server.url, transports, events=["news"])
    outsider = clients.connect(interop_server.url, transports, events=["news"])
    assert a.call("join", room, timeout=TIMEOUT) == {"ok": True}
    assert b.call("join", room, timeout=TIMEOUT) == {"ok": True}
    assert sorted(a.call("rooms", timeout=TIMEOUT)) == sorted([a.get_sid(), room])

    assert a.call("publish", {"room": room, "event": "news", "data": {"n": 1}}, timeout=TIMEOUT) == {"ok": True}
    assert b.rec.wait("news") == [{"n": 1}]
    # A round trip on the sender and the outsider: anything queued for them has arrived by then.
    assert a.call("message-with-ack", "barrier", timeout=TIMEOUT) == "barrier"
    assert outsider.call("message-with-ack", "barrier", timeout=TIMEOUT) == "barrier"
    assert a.rec.of("news") == []
    assert outsider.rec.of("news") == []

    assert b.call("leave", room, timeout=TIMEOUT) == {"ok": True}
    assert outsider.call("publish", {"room": room, "event": "news", "data": 2}, timeout=TIMEOUT) == {"ok": True}
    assert a.rec.wait("news") == [2]
    assert b.call("message-with-ack", "barrier", timeout=TIMEOUT) == "barrier"
    assert len(b.rec.of("news")) == 1


@pytest.mark.parametrize("transports", TRANSPORTS)
def test_invalid_join_gets_error_ack(interop_server, clients, transports):
    c = clients.connect(interop_server.url, transports)
    res = c.call("join", 42, timeout=TIMEOUT)
    assert res["ok"] is False and isinstance(res["error"], str) and res["error"]


def test_polling_upgrades_to_websocket(interop_server, clients):
    # python-engineio upgrades during connect(): handshake over polling, then the probe.
    c = clients.connect(interop_server.url, ["polling", "websocket"], events=["message-back"])
    assert c.transport() == "websocket"
    c.emit("message", "after upgrade")
    assert c.rec.wait("message-back") == ["after upgrade"]
    assert c.call("message-with-ack", "ok", timeout=TIMEOUT) == "ok"
