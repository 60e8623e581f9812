#!/usr/bin/env python3
"""Results of scripts/bench: record one run, and summarize a results file as Markdown.

    summarize.py record --out results.jsonl --stdout F --stderr F --exit-code N \
        --started T --ended T key=value...
        Appends one JSON line: the key=value pairs (numbers as numbers), "ok", "exit_code",
        "seconds", and the bench's own JSON object (the last JSON object line of its stdout)
        under "result"; on failure "error" and the tail of its stderr. Prints a one-line digest
        on stderr. Exit status 1 when the run failed.

    summarize.py summary results.jsonl [--env env.txt]
        Prints Markdown tables (medians over the repetitions) ready for BENCHMARKS.md.

Plain Python 3, standard library only. The bench's JSON field names are looked up by meaning
(delivered messages per second, latency percentiles, RSS per connection, ...) so that this file
does not break when the load generator renames a field; see METRICS.
"""

import argparse
import json
import math
import re
import statistics
import sys
from collections import defaultdict

# `switchboard-baseline` is an earlier Switchboard build run beside the current one
# (scripts/bench's BENCH_BASELINE_BIN), for before/after figures from the same run.
# `relay` is the calibration relay (bench/peers/relay): the floor a WebSocket relay costs.
# `switchboard-history` is the current build with every room a history room.
# `switchboard-cluster-3` is three Switchboard nodes sharing rooms through one Redis.
CLUSTER = "switchboard-cluster-3"
TARGET_ORDER = ["switchboard", "switchboard-baseline", "switchboard-history", CLUSTER, "switchboard-history-cluster-3", "nats", "relay", "socketio", "socketio-redis-2-nodes", "ws"]
RATIO_PEERS = ["switchboard-baseline", "switchboard-history", CLUSTER, "nats", "relay", "socketio", "socketio-redis-2-nodes", "ws"]
# What the Cluster table sets the cluster beside.
CLUSTER_PEERS = ["switchboard", "socketio-redis-2-nodes"]


# ---------------------------------------------------------------------------------------------
# Reading the bench's JSON.


def flatten(obj, prefix=""):
    """{"a": {"b": 1}} -> {"a.b": 1}; numbers (and booleans as 0/1) only, keys lower case."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{str(k).lower()}."))
    elif isinstance(obj, bool):
        out[prefix[:-1]] = int(obj)
    elif isinstance(obj, (int, float)) and not (isinstance(obj, float) and math.isnan(obj)):
        out[prefix[:-1]] = obj
    return out


def time_scale_ms(key):
    """Factor to milliseconds from the unit a key names (default: milliseconds)."""
    k = key.replace("µ", "u")
    if re.search(r"(^|[._])(ns|nanos?|nanoseconds?)([._]|$)", k):
        return 1e-6
    if re.search(r"(^|[._])(us|micros?|microseconds?)([._]|$)", k):
        return 1e-3
    if re.search(r"(^|[._])(ms|millis?|milliseconds?)([._]|$)", k):
        return 1.0
    if re.search(r"(^|[._])(s|secs?|seconds?)$", k):
        return 1e3
    return 1.0


def bytes_scale_kib(key):
    """Factor to KiB from the unit a key names (default: bytes)."""
    if re.search(r"(^|[._])(kib|kb|kbytes|kilobytes)([._]|$)", key):
        return 1.0
    if re.search(r"(^|[._])(mib|mb|mbytes|megabytes)([._]|$)", key):
        return 1024.0
    return 1.0 / 1024.0


def pick(flat, include, exclude=None, prefer=None):
    """The first key (by preference, then shortest) matching include and not exclude."""
    keys = [k for k in flat if re.search(include, k) and not (exclude and re.search(exclude, k))]
    if not keys:
        return None
    keys.sort(key=lambda k: (0 if prefer and re.search(prefer, k) else 1, len(k), k))
    return keys[0]


PER_SEC = r"(per_?s(ec(ond)?)?|_ps$|/s$|_s$|_rate$|\.rate$|throughput)"


# The bench's own field names (bench/src/report.rs); the patterns after them are the fallback
# if a field is renamed.
KNOWN = {
    "msgs_per_s": ["msgs_per_sec"],
    "p50_ms": ["latency_us.p50"],
    "p99_ms": ["latency_us.p99"],
    "rss_kib_per_conn": ["rss_per_conn_kib"],
    "handshakes_per_s": ["handshakes_per_sec"],
    "server_ns_per_delivery": ["server_ns_per_delivery"],
}
PROBLEM_KEYS = ["lost", "duplicated", "invalid", "disconnected", "timed_out"]


def metrics(result):
    """The comparable numbers of one bench result, in fixed units, or None where absent."""
    flat = flatten(result)
    m = {}

    def known(name):
        for k in KNOWN[name]:
            if k in flat:
                return k
        return None

    # Delivered messages per second (what the subscribers received), not what was published.
    k = known("msgs_per_s") or pick(
        flat,
        r"(deliver|receiv|recv|msgs|messages|throughput).*" + PER_SEC + "|throughput",
        exclude=r"(publish|sent|send|handshake|connect|lat|rss|byte)",
        prefer=r"deliver|receiv|recv",
    )
    m["msgs_per_s"] = flat[k] if k else None
    for p in ("50", "99"):
        k = known(f"p{p}_ms") or pick(
            flat, rf"(^|[._])p{p}([._]|$)|percentile_?{p}\b", exclude=r"handshake|connect", prefer=r"lat")
        m[f"p{p}_ms"] = flat[k] * time_scale_ms(k) if k else None
    k = known("rss_kib_per_conn") or pick(flat, r"rss.*per.*conn|per.*conn.*rss")
    m["rss_kib_per_conn"] = flat[k] * bytes_scale_kib(k) if k else None
    k = known("handshakes_per_s") or pick(flat, r"handshake.*" + PER_SEC, exclude=r"rss|byte")
    m["handshakes_per_s"] = flat[k] if k else None
    k = known("server_ns_per_delivery")
    m["server_ns_per_delivery"] = flat[k] if k else None
    # Anything that says messages went missing, twice, or clients were cut off.
    problems = {k: flat[k] for k in PROBLEM_KEYS if flat.get(k)}
    for key, v in flat.items():
        if key not in problems and v and re.search(r"(lost|dup|disconnect|dropped|failed|reorder)", key):
            problems[key] = v
    errors = result.get("errors") if isinstance(result, dict) else None
    if errors:
        problems["errors"] = "; ".join(str(e) for e in errors[:3])
    m["problems"] = problems
    # Several nodes (`nodes`, one object per --url) and the Redis between them.
    nodes = result.get("nodes") if isinstance(result, dict) else None
    m["node_ns_per_delivery"] = [n.get("cpu_ns_per_delivery") if isinstance(n, dict) else None
                                 for n in nodes] if isinstance(nodes, list) else []
    m["redis_ns_per_publish"] = flat.get("redis_cpu_ns_per_publish")
    lost, expected = flat.get("lost"), flat.get("expected")
    m["lost_fraction"] = lost / expected if lost is not None and expected else None
    return m


# ---------------------------------------------------------------------------------------------
# record


def last_json_object(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def parse_value(v):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v, v)


def published(result):
    """Messages the bench's publishers published (`fanout`), from its parameters."""
    try:
        per = int(result["publishers"]) * int(result["messages"])
        return per * (1 if result.get("publisher_rooms") == "own" else int(result.get("rooms") or 1))
    except (KeyError, TypeError, ValueError):
        return None


def record(args):
    meta = {}
    for kv in args.meta:
        k, _, v = kv.partition("=")
        meta[k] = parse_value(v)
    with open(args.stdout, errors="replace") as f:
        out = f.read()
    with open(args.stderr, errors="replace") as f:
        err = f.read()
    result = last_json_object(out)
    line = dict(meta)
    line["exit_code"] = args.exit_code
    line["seconds"] = round(args.ended - args.started, 3)
    line["ok"] = args.exit_code == 0 and result is not None
    line["result"] = result
    # Redis's PUBLISH calls during the run (scripts/bench reads INFO commandstats around it) per
    # message published; `_net` also takes off the nodes' readiness canaries (one PUBLISH per
    # node per second over the window), an estimate.
    calls = meta.get("redis_publish_calls")
    pub = published(result) if isinstance(result, dict) else None
    if isinstance(calls, (int, float)) and pub:
        line["redis_publish_per_message"] = round(calls / pub, 4)
        nodes, window = meta.get("redis_canary_nodes"), meta.get("redis_publish_window_s")
        if isinstance(nodes, (int, float)) and isinstance(window, (int, float)):
            line["redis_publish_per_message_net"] = round(max(0.0, calls - nodes * window) / pub, 4)
    if not line["ok"]:
        why = "timed out (killed by timeout)" if args.exit_code in (124, 137) else f"exit code {args.exit_code}"
        if result is None:
            why += ", no JSON on stdout"
        line["error"] = why
        line["stderr_tail"] = err.strip().splitlines()[-5:]
    with open(args.out, "a") as f:
        f.write(json.dumps(line, separators=(",", ":")) + "\n")
    digest = f"  -> {meta.get('target')} {meta.get('scenario')} N={meta.get('n')}: "
    if result is not None:
        m = metrics(result)
        parts = []
        if m["msgs_per_s"] is not None:
            parts.append(f"{fmt_num(m['msgs_per_s'])} msgs/s")
        if m["p50_ms"] is not None or m["p99_ms"] is not None:
            parts.append(f"p50 {fmt_ms(m['p50_ms'])} p99 {fmt_ms(m['p99_ms'])} ms")
        if m["handshakes_per_s"] is not None and meta.get("scenario") == "connect":
            parts.append(f"{fmt_num(m['handshakes_per_s'])} handshakes/s")
        if m["rss_kib_per_conn"] is not None:
            parts.append(f"{m['rss_kib_per_conn']:.1f} KiB/conn")
        if m["node_ns_per_delivery"]:
            if m["server_ns_per_delivery"] is not None:
                parts.append(f"{m['server_ns_per_delivery']:.0f} ns CPU/delivery")
            parts.append("per node " + " / ".join(f"{v:.0f}" if v is not None else "–"
                                                  for v in m["node_ns_per_delivery"]) + " ns")
        if m["redis_ns_per_publish"] is not None:
            parts.append(f"Redis {m['redis_ns_per_publish']:.0f} ns CPU/publish")
        if "redis_publish_per_message" in line:
            parts.append(f"{line['redis_publish_per_message']:.3f} Redis PUBLISH/message")
        if m["problems"]:
            parts.append("problems: " + ", ".join(f"{k}={v}" for k, v in sorted(m["problems"].items())))
        digest += "; ".join(parts) or "(no known metric in the JSON)"
    if not line["ok"]:
        digest += f" FAILED: {line['error']}" + (f": {line['stderr_tail'][-1]}" if line["stderr_tail"] else "")
    print(digest, file=sys.stderr)
    return 0 if line["ok"] else 1


# ---------------------------------------------------------------------------------------------
# summary


def fmt_num(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e4:
        return f"{v / 1e3:.0f} k"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k"
    return f"{v:.0f}"


def fmt_ms(v):
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def summary(args):
    lines = []
    with open(args.results) as f:
        for raw in f:
            raw = raw.strip()
            if raw:
                lines.append(json.loads(raw))
    runs = defaultdict(list)  # (scenario, n, rate, target) -> [metrics]
    failures = defaultdict(int)
    problems = []
    targets_seen = set()
    split_publish = None
    for r in lines:
        key = (r.get("scenario"), r.get("n"), r.get("rate", 0), r.get("target"))
        targets_seen.add(r.get("target"))
        if r.get("target") == "socketio-redis-2-nodes" and r.get("scenario") != "connect":
            split_publish = bool(r.get("publish_url_split"))
        if not r.get("ok"):
            failures[key] += 1
            tail = (r.get("stderr_tail") or [""])[-1]
            problems.append(f"{r.get('scenario')} {r.get('target')} N={r.get('n')} run {r.get('run')}: "
                            f"{r.get('error')}{': ' + tail if tail else ''}")
            continue
        m = metrics(r["result"])
        m["redis_publish_per_message"] = r.get("redis_publish_per_message")
        m["redis_publish_per_message_net"] = r.get("redis_publish_per_message_net")
        runs[key].append(m)
        if m["problems"]:
            problems.append(f"{r.get('scenario')} {r.get('target')} N={r.get('n')} run {r.get('run')}: "
                            + ", ".join(f"{k}={v}" for k, v in sorted(m["problems"].items())))
    targets = [t for t in TARGET_ORDER if t in targets_seen] + sorted(targets_seen - set(TARGET_ORDER))

    def cell(scenario, n, rate, target, fn):
        ms = runs.get((scenario, n, rate, target), [])
        v = median(fn(m) for m in ms)
        fails = failures.get((scenario, n, rate, target), 0)
        note = f" ({fails} failed)" if fails else ""
        worst = max((m["lost_fraction"] or 0 for m in ms), default=0)
        if worst > 0:
            note += f" ({worst * 100:.3g}% lost)"
        return v, note, len(ms)

    out = ["# Switchboard vs. peers", ""]
    if args.env:
        with open(args.env) as f:
            env = [ln.rstrip("\n") for ln in f if ln.strip()]
        out += ["Setup (scripts/bench):", ""] + [f"- {ln}" for ln in env] + [""]
    counts = sorted({len(v) for v in runs.values()})
    if counts:
        out += [f"Every cell is the median of {'/'.join(map(str, counts))} run(s), each on a fresh server process.", ""]

    # Fan-out throughput.
    fan = sorted({(k[1], k[2]) for k in list(runs) + list(failures) if k[0] == "fanout"})
    if fan:
        out += ["## Fan-out throughput", "",
                "1 room, 1 publisher publishing as fast as the server takes messages, 100-byte "
                "payloads; messages delivered per second, all subscribers together.", ""]
        header = ["subscribers"] + targets + [f"switchboard/{p}" for p in RATIO_PEERS if p in targets and "switchboard" in targets]
        rows = []
        for n, rate in fan:
            row = [n]
            vals = {}
            for t in targets:
                v, note, _ = cell("fanout", n, rate, t, lambda m: m["msgs_per_s"])
                vals[t] = v
                row.append(fmt_num(v) + note)
            for p in RATIO_PEERS:
                if p in targets and "switchboard" in targets:
                    a, b = vals.get("switchboard"), vals.get(p)
                    row.append(f"{a / b:.2f}×" if a and b else "–")
            rows.append(row)
        out += [table(header, rows), ""]

        out += ["## Server CPU per delivery", "",
                "Same runs: the server process's CPU time (user + system) divided by the messages "
                "delivered, nanoseconds. This compares the servers' cost even where the load "
                "generator, not the server, is the limit.", ""]
        rows = []
        for n, rate in fan:
            row = [n]
            for t in targets:
                v, note, _ = cell("fanout", n, rate, t, lambda m: m["server_ns_per_delivery"])
                row.append((f"{v:.0f}" if v is not None else "–") + note)
            rows.append(row)
        out += [table(["subscribers"] + targets, rows), ""]

        out += ["## Fan-out latency", "",
                "Same runs: publish-to-delivery latency, median of the runs' p50 / p99, milliseconds. "
                "With an unpaced publisher this is mostly time spent queued: the Switchboard "
                "publisher keeps at most its window (256) of unacknowledged publishes in flight, "
                "the others have no acknowledgement and hand the server their whole backlog at once "
                "(the Node servers read it all into memory; nats-server reads it as it fans out). "
                "See the paced runs for latency under a steady load.", ""]
        rows = []
        for n, rate in fan:
            row = [n]
            for t in targets:
                p50, note, _ = cell("fanout", n, rate, t, lambda m: m["p50_ms"])
                p99, _, _ = cell("fanout", n, rate, t, lambda m: m["p99_ms"])
                row.append(f"{fmt_ms(p50)} / {fmt_ms(p99)}{note}")
            rows.append(row)
        out += [table(["subscribers"] + targets, rows), ""]

    paced = sorted({(k[1], k[2]) for k in list(runs) + list(failures) if k[0] == "paced"})
    if paced:
        ptargets = [t for t in targets if any(k[0] == "paced" and k[3] == t for k in list(runs) + list(failures))]
        out += ["## Paced latency", "",
                "1 room, 1 publisher at a fixed rate: p50 / p99 publish-to-delivery latency, ms.", ""]
        rows = []
        for n, rate in paced:
            row = [n, f"{rate:g}/s"]
            for t in ptargets:
                p50, note, _ = cell("paced", n, rate, t, lambda m: m["p50_ms"])
                p99, _, _ = cell("paced", n, rate, t, lambda m: m["p99_ms"])
                row.append(f"{fmt_ms(p50)} / {fmt_ms(p99)}{note}")
            rows.append(row)
        out += [table(["subscribers", "publish rate"] + ptargets, rows), ""]

    # Many rooms: chat-shaped load (scenario "rooms"; n is the subscriber count, the run's
    # `rooms` and `publishers` come from its result). Unpaced (rate 0) and paced rows.
    many = sorted({(k[1], k[2]) for k in list(runs) + list(failures) if k[0] == "rooms"})
    if many:
        rtargets = [t for t in targets if any(k[0] == "rooms" and k[3] == t for k in list(runs) + list(failures))]
        shapes = {}
        for r in lines:
            if r.get("scenario") == "rooms" and r.get("ok"):
                res = r["result"]
                shapes[(r.get("n"), r.get("rate", 0))] = (res.get("rooms"), res.get("publishers"))
        out += ["## Many rooms", "",
                "Chat-shaped load: the subscribers spread over many small rooms, each room with its "
                "own publisher (`--publisher-rooms own`), 100-byte payloads. Every publisher publishes "
                "fire and forget (Switchboard's with `--window 0`: no id, so no ack; the peers have "
                "no acknowledgements). Rate 0 is unpaced; otherwise the publishers together publish "
                "at that rate. "
                "Per cell: server CPU per delivery (ns), then p50 / p99 latency (ms), then "
                "deliveries/s; the ratio columns divide Switchboard's CPU per delivery by each "
                "peer's (lower is better for Switchboard).", ""]
        header = ["rooms × members, publishers", "rate"] + rtargets + [
            f"switchboard/{p} CPU" for p in RATIO_PEERS if p in rtargets and "switchboard" in rtargets]
        rows = []
        for n, rate in many:
            rooms_n, pubs = shapes.get((n, rate), (None, None))
            shape = f"{rooms_n} × {n // rooms_n if rooms_n else '?'}, {pubs}"
            row = [shape, "unpaced" if rate == 0 else f"{rate:g}/s"]
            cpu = {}
            for t in rtargets:
                c, note, _ = cell("rooms", n, rate, t, lambda m: m["server_ns_per_delivery"])
                p50, _, _ = cell("rooms", n, rate, t, lambda m: m["p50_ms"])
                p99, _, _ = cell("rooms", n, rate, t, lambda m: m["p99_ms"])
                mps, _, _ = cell("rooms", n, rate, t, lambda m: m["msgs_per_s"])
                cpu[t] = c
                row.append(f"{c:.0f} ns; {fmt_ms(p50)} / {fmt_ms(p99)}; {fmt_num(mps)}{note}"
                           if c is not None else "–" + note)
            for p in RATIO_PEERS:
                if p in rtargets and "switchboard" in rtargets:
                    a, b = cpu.get("switchboard"), cpu.get(p)
                    row.append(f"{a / b:.2f}×" if a and b else "–")
            rows.append(row)
        out += [table(header, rows), ""]

    # Cluster: the 3-node Switchboard cluster beside one Switchboard node and the 2-node
    # Socket.IO cluster, fanout and paced runs.
    cluster_keys = sorted({(k[0], k[1], k[2]) for k in list(runs) + list(failures)
                           if k[3] == CLUSTER and k[0] in ("fanout", "paced")},
                          key=lambda k: (k[0] != "fanout", k[1], k[2]))
    if cluster_keys:
        n_nodes = max((len(m["node_ns_per_delivery"]) for k, ms in runs.items() if k[3] == CLUSTER
                       for m in ms), default=0)
        peers = [p for p in CLUSTER_PEERS if p in targets]
        out += ["## Cluster", "",
                f"`{CLUSTER}`: redis-server and three Switchboard nodes (`--workers 1` each), all on "
                "one core; the subscribers spread round-robin over the nodes (subscriber i on node "
                "i mod 3), the publisher on c1 publishing with `scope: cluster`, so every message is "
                "one Redis PUBLISH that each node receives and fans out to its own subscribers. "
                "Per row: the cluster's deliveries/s (all subscribers together); CPU per delivery of "
                "each node (its CPU over the deliveries to its own subscribers, ns; c1's includes "
                "taking the publishes); Redis's CPU per published message (ns); Redis PUBLISH calls "
                "per published message (INFO commandstats around the run; in brackets net of the "
                "nodes' readiness canaries, one PUBLISH per node per second). The ratio columns "
                "divide the cluster's deliveries/s, and its CPU per delivery (all nodes together, "
                "as in the Server CPU table), by those of "
                + " and ".join(f"`{p}`" for p in peers) + " in the same scenario"
                + (" (socketio-redis-2-nodes: node A's CPU only, node B holds the publisher)"
                   if "socketio-redis-2-nodes" in peers else "")
                + ".", ""] if peers else [
                "## Cluster", "",
                f"`{CLUSTER}`: redis-server and three Switchboard nodes, subscribers round-robin over "
                "them, the publisher on c1 with `scope: cluster`. Run `switchboard` and "
                "`socketio-redis-2-nodes` too for the ratio columns.", ""]
        header = ["subscribers", "run", "deliveries/s"] + [f"c{i + 1} ns/delivery" for i in range(n_nodes)] + [
            "Redis ns/publish", "Redis PUBLISH/message"]
        for p in peers:
            header += [f"vs {p}: deliveries/s", f"vs {p}: CPU/delivery"]
        rows = []
        for scenario, n, rate in cluster_keys:
            mps, note, _ = cell(scenario, n, rate, CLUSTER, lambda m: m["msgs_per_s"])
            row = [n, "unpaced" if scenario == "fanout" else f"paced {rate:g}/s", fmt_num(mps) + note]
            for i in range(n_nodes):
                v, _, _ = cell(scenario, n, rate, CLUSTER,
                               lambda m, i=i: m["node_ns_per_delivery"][i] if i < len(m["node_ns_per_delivery"]) else None)
                row.append(f"{v:.0f}" if v is not None else "–")
            v, _, _ = cell(scenario, n, rate, CLUSTER, lambda m: m["redis_ns_per_publish"])
            row.append(f"{v:.0f}" if v is not None else "–")
            raw, _, _ = cell(scenario, n, rate, CLUSTER, lambda m: m["redis_publish_per_message"])
            net, _, _ = cell(scenario, n, rate, CLUSTER, lambda m: m["redis_publish_per_message_net"])
            row.append((f"{raw:.3f}" if raw is not None else "–") + (f" ({net:.3f})" if net is not None else ""))
            cpu, _, _ = cell(scenario, n, rate, CLUSTER, lambda m: m["server_ns_per_delivery"])
            for p in peers:
                pm, _, _ = cell(scenario, n, rate, p, lambda m: m["msgs_per_s"])
                pc, _, _ = cell(scenario, n, rate, p, lambda m: m["server_ns_per_delivery"])
                row.append(f"{mps / pm:.2f}×" if mps and pm else "–")
                row.append(f"{cpu / pc:.2f}×" if cpu and pc else "–")
            rows.append(row)
        out += [table(header, rows), ""]
        # The peers' own Redis figures, when they were measured.
        redis_rows = []
        for scenario, n, rate in cluster_keys:
            for p in [t for t in peers if t != "switchboard"]:
                v, _, cnt = cell(scenario, n, rate, p, lambda m: m["redis_ns_per_publish"])
                raw, _, _ = cell(scenario, n, rate, p, lambda m: m["redis_publish_per_message"])
                if cnt and (v is not None or raw is not None):
                    redis_rows.append([n, "unpaced" if scenario == "fanout" else f"paced {rate:g}/s", p,
                                       f"{v:.0f}" if v is not None else "–",
                                       f"{raw:.3f}" if raw is not None else "–"])
        if redis_rows:
            out += ["The other cluster's Redis in the same runs:", "",
                    table(["subscribers", "run", "target", "Redis ns/publish", "Redis PUBLISH/message"], redis_rows), ""]

    mem_rows = []
    conn = sorted({k[1] for k in list(runs) + list(failures) if k[0] == "connect"})
    for n in conn:
        row = [f"{n} idle connections"]
        for t in targets:
            v, note, _ = cell("connect", n, 0, t, lambda m: m["rss_kib_per_conn"])
            row.append((f"{v:.1f}" if v is not None else "–") + note)
        mem_rows.append(row)
    for n, rate in fan:
        row = [f"fan-out, {n} subscribers"]
        for t in targets:
            v, _, _ = cell("fanout", n, rate, t, lambda m: m["rss_kib_per_conn"])
            row.append(f"{v:.1f}" if v is not None else "–")
        mem_rows.append(row)
    if mem_rows:
        out += ["## Memory", "", "Server RSS per connection, KiB (median).", ""]
        out += [table(["scenario"] + targets, mem_rows), ""]
    if conn:
        rows = []
        for n in conn:
            row = [n]
            for t in targets:
                v, note, _ = cell("connect", n, 0, t, lambda m: m["handshakes_per_s"])
                row.append(fmt_num(v) + note)
            rows.append(row)
        out += ["## Connection rate", "", "Handshakes per second while opening the connections (median).", ""]
        out += [table(["connections"] + targets, rows), ""]

    notes = ["Servers pinned to one core (CPU 0), the load generator to another (CPU 1); "
             "Switchboard runs with `--workers 1` accordingly."]
    if "socketio-redis-2-nodes" in targets:
        if split_publish:
            notes.append("socketio-redis-2-nodes: two Socket.IO processes and redis-server, all on CPU 0; "
                         "subscribers on node A, the publisher on node B, so every message crosses Redis. "
                         "RSS is node A's.")
        else:
            notes.append("socketio-redis-2-nodes: two Socket.IO processes and redis-server, all on CPU 0; "
                         "the bench has no `--publish-url`, so subscribers and publisher are all on node A "
                         "(the adapter still publishes every message to Redis; node B only listens). "
                         "RSS is node A's.")
    if CLUSTER in targets:
        notes.append(f"{CLUSTER}: redis-server and three Switchboard nodes, all on CPU 0; subscribers "
                     "round-robin over the nodes, the publisher on c1 (`--scope cluster`). Its CPU per "
                     "delivery is the three nodes' CPU together over all deliveries (Redis's is "
                     "separate, in the Cluster table), its RSS per connection the three nodes' growth "
                     "over all connections. Not run in the connect and many-rooms scenarios.")
    out += ["## Notes", ""] + [f"- {n}" for n in notes]
    if problems:
        out += ["", "Runs that failed or reported loss, duplicates or disconnections:", ""]
        out += [f"- {p}" for p in problems]
    print("\n".join(out))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--out", required=True)
    r.add_argument("--stdout", required=True)
    r.add_argument("--stderr", required=True)
    r.add_argument("--exit-code", type=int, required=True)
    r.add_argument("--started", type=float, default=0.0)
    r.add_argument("--ended", type=float, default=0.0)
    r.add_argument("meta", nargs="*", help="key=value")
    s = sub.add_parser("summary")
    s.add_argument("results")
    s.add_argument("--env")
    args = ap.parse_args()
    return record(args) if args.cmd == "record" else summary(args)


if __name__ == "__main__":
    sys.exit(main())
