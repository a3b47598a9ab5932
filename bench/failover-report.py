#!/usr/bin/env python3
"""Sums up `bench/cluster failover`: reads the JSON lines of every `cluster-bench
failover-clients` process on stdin (one per client, then a summary per process) and prints one
JSON object: how many clients of the killed node recovered, the time from the kill to their
CONNECT answer, and whether any client saw a message twice or missed one.

    cat fc*.json | bench/failover-report.py --kill-us T --killed-port P --clients N \
        --last-seq S [--extra JSON]

Exits 1 (after printing) when the counts do not add up or a recovered client has a gap, a
duplicate or a missing tail: those are failures of the run, not figures.
"""
import argparse
import json
import sys


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, round((len(v) - 1) * q))]


def ms(us):
    return None if us is None else round(us / 1000, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kill-us", type=int, required=True)
    ap.add_argument("--killed-port", type=int, required=True)
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--last-seq", type=int, required=True)
    ap.add_argument("--extra", default="{}")
    a = ap.parse_args()

    clients, summaries = [], []
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        obj = json.loads(line)
        if "client" in obj:
            clients.append(obj)
        elif obj.get("scenario") == "failover-clients":
            summaries.append(obj)

    problems = []
    if len(clients) != a.clients:
        problems.append(f"{len(clients)} client records, not {a.clients}")
    for s in summaries:
        if s.get("finished") != s.get("clients"):
            problems.append(f"a client process finished {s.get('finished')} of {s.get('clients')} clients")

    on_killed = [c for c in clients if c["first_port"] == a.killed_port]
    others = [c for c in clients if c["first_port"] != a.killed_port]
    early = [c for c in clients if any(d["at_us"] < a.kill_us for d in c["drops"])]
    if early:
        problems.append(f"{len(early)} clients lost their connection before the kill")
    collateral = [c for c in others if c["drops"]]
    if collateral:
        problems.append(f"{len(collateral)} clients of the surviving nodes lost their connection")

    recovered, not_recovered, never_back = [], [], []
    detect, to_recovered, to_back, attempts, replayed = [], [], [], [], []
    # Where the time went, per reconnection that got through: the backoff delay (from the
    # disconnection to the attempt), the WebSocket through nginx (attempt to Engine.IO open),
    # and the namespace CONNECT (open to the answer, the restore on the node).
    backoff, ws_open, connect = [], [], []
    for c in on_killed:
        drops = [d for d in c["drops"] if d["at_us"] >= a.kill_us]
        if not drops:
            never_back.append(c)
            problems.append(f"client {c['client']} of the killed node never noticed the kill")
            continue
        d = drops[0]
        detect.append(d["at_us"] - a.kill_us)
        if d["back_us"] is None:
            never_back.append(c)
            continue
        to_back.append(d["back_us"] - a.kill_us)
        attempts.append(d["attempts"])
        if d.get("attempt_us") and d.get("opened_us"):
            backoff.append(d["attempt_us"] - d["at_us"])
            ws_open.append(d["opened_us"] - d["attempt_us"])
            connect.append(d["back_us"] - d["opened_us"])
        if d["recovered"]:
            recovered.append(c)
            to_recovered.append(d["back_us"] - a.kill_us)
            replayed.append(d["replayed"])
        else:
            not_recovered.append(c)
    if never_back:
        problems.append(f"{len(never_back)} clients of the killed node never connected again")
    dropped_twice = [c for c in on_killed if len(c["drops"]) > 1]

    def integrity(group):
        return {
            "clients": len(group),
            "gaps": sum(c["gaps"] for c in group),
            "clients_with_gaps": sum(1 for c in group if c["gaps"]),
            "duplicates": sum(c["duplicates"] for c in group),
            "clients_with_duplicates": sum(1 for c in group if c["duplicates"]),
            "missing_tail": sum(c["missing_tail"] for c in group),
            "clients_missing_tail": sum(1 for c in group if c["missing_tail"]),
        }

    rec = integrity(recovered)
    unaffected = integrity([c for c in others if not c["drops"]])
    unrec = integrity(not_recovered)
    for name, g in (("recovered clients", rec), ("clients of the surviving nodes", unaffected)):
        if g["gaps"] or g["duplicates"] or g["missing_tail"]:
            problems.append(
                f"{name}: {g['gaps']} missed messages ({g['clients_with_gaps']} clients), "
                f"{g['duplicates']} duplicates ({g['clients_with_duplicates']} clients), "
                f"{g['missing_tail']} messages missing at the end ({g['clients_missing_tail']} clients)"
            )

    new_ports = {}
    for c in recovered + not_recovered:
        p = str(c["port"])
        new_ports[p] = new_ports.get(p, 0) + 1
    reasons = {}
    for c in on_killed:
        for d in c["drops"][:1]:
            reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    errors = {}
    for c in clients:
        if c.get("last_error"):
            key = c["last_error"][:80]
            errors[key] = errors.get(key, 0) + 1

    out = {
        "scenario": "failover",
        "clients": len(clients),
        "last_seq": a.last_seq,
        "killed_port": a.killed_port,
        "killed_node_clients": len(on_killed),
        "recovered": len(recovered),
        "not_recovered": len(not_recovered),
        "never_back": len(never_back),
        "dropped_again_after_reconnecting": len(dropped_twice),
        "collateral_drops": len(collateral),
        "kill_to_disconnect_ms": {"p50": ms(pct(detect, 0.5)), "p99": ms(pct(detect, 0.99)), "max": ms(pct(detect, 1))},
        "kill_to_recovered_ms": {
            "p50": ms(pct(to_recovered, 0.5)),
            "p99": ms(pct(to_recovered, 0.99)),
            "max": ms(pct(to_recovered, 1)),
            "min": ms(pct(to_recovered, 0)),
        },
        "kill_to_connected_ms_all": {"p50": ms(pct(to_back, 0.5)), "p99": ms(pct(to_back, 0.99))},
        "reconnect_phases_ms": {
            name: {"p50": ms(pct(v, 0.5)), "p99": ms(pct(v, 0.99)), "max": ms(pct(v, 1))}
            for name, v in (("backoff", backoff), ("websocket_open", ws_open), ("connect_answer", connect))
        },
        "reconnect_attempts": {"p50": pct(attempts, 0.5), "max": pct(attempts, 1)},
        "replayed_per_recovered": {"p50": pct(replayed, 0.5), "max": pct(replayed, 1)},
        "recovered_on_port": new_ports,
        "disconnect_reasons": reasons,
        "integrity": {"recovered": rec, "not_recovered": unrec, "surviving_nodes": unaffected},
        "lost_by_not_recovered": sum(c["lost_unrecovered"] for c in not_recovered),
        "client_errors": errors,
        "connect_errors": sum(c["connect_errors"] for c in clients),
    }
    out.update(json.loads(a.extra))
    out["problems"] = problems
    print(json.dumps(out))
    if not_recovered:
        print(f"!! {len(not_recovered)} of {len(on_killed)} clients of the killed node did not recover", file=sys.stderr)
    for p in problems:
        print(f"!! {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
