"""Turns loadtest/results/latest.jsonl into the markdown tables of BENCHMARKS.md."""
import json
import platform
import subprocess
import sys

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {(r["server_kind"], r["label"]): r["report"] for r in runs}


def cpu():
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return "%s, %s cores, %s" % (model, cores, platform.platform())


def sustained(r):
    return r["delivered_pct"] >= 95.0 and r["p99_us"] < 250_000


print("Machine: %s. Server pinned to core 0, generator to core 1.\n" % cpu())
print("### fanout (1000 clients in one room, 10 senders, 100-byte messages)\n")
print("| server | offered deliveries/s | delivered | p50 ms | p99 ms | server CPU us/delivery | server CPU % | generator CPU % | closes |")
print("|---|---|---|---|---|---|---|---|---|")
best = {}
for (kind, label), r in sorted(by.items(), key=lambda kv: (kv[0][0], int(kv[0][1].split("-")[1]) if kv[0][1].startswith("fanout-") else 0)):
    if not label.startswith("fanout-"):
        continue
    offered = r["sent"] and r["expected"] / r["duration_s"]
    print("| %s | %.0f | %.1f %% | %.1f | %.1f | %s | %.0f | %.0f | %s |" % (
        kind, offered, r["delivered_pct"], r["p50_us"] / 1000, r["p99_us"] / 1000,
        "%.2f" % r["server_cpu_us_per_delivery"] if r["server_cpu_us_per_delivery"] else "-",
        r["server_cpu_pct"] or 0, r["generator_cpu_pct"], r["closes"] or ""))
    if sustained(r):
        best[kind] = max(best.get(kind, 0), r["deliveries_per_s"])
print()
if best:
    line = ", ".join("%s %.0f/s" % kv for kv in sorted(best.items()))
    ratio = best.get("chatd", 0) / best["baseline"] if best.get("baseline") else float("nan")
    print("Highest sustained fan-out rate (95 %% delivered, p99 < 250 ms): %s; chatd / baseline = %.2f\n" % (line, ratio))

for label, title in [("rooms", "rooms (2000 clients in rooms of 10, 1 msg/s each)")]:
    print("### %s\n" % title)
    print("| server | deliveries/s | delivered | p50 ms | p99 ms | server CPU us/delivery |")
    print("|---|---|---|---|---|---|")
    for kind in ("chatd", "baseline"):
        r = by.get((kind, label))
        if r:
            print("| %s | %.0f | %.1f %% | %.2f | %.2f | %s |" % (kind, r["deliveries_per_s"], r["delivered_pct"], r["p50_us"] / 1000,
                  r["p99_us"] / 1000, "%.2f" % r["server_cpu_us_per_delivery"] if r["server_cpu_us_per_delivery"] else "-"))
    print()

print("### burst (100 prompt readers in one room; 1 sender writes 300 chats in one write, 10 bursts/s)\n")
print("| server | deliveries/s | delivered | p50 ms | p99 ms | server CPU us/delivery | closes |")
print("|---|---|---|---|---|---|---|")
for kind in ("chatd", "baseline"):
    r = by.get((kind, "burst"))
    if r:
        print("| %s | %.0f | %.1f %% | %.2f | %.2f | %s | %s |" % (kind, r["deliveries_per_s"], r["delivered_pct"], r["p50_us"] / 1000,
              r["p99_us"] / 1000, "%.2f" % r["server_cpu_us_per_delivery"] if r["server_cpu_us_per_delivery"] else "-", r["closes"] or "none"))
print()

durable = sorted(((int(l.split("-")[1]), r) for (k, l), r in by.items() if l.startswith("durable-")))
if durable:
    print("### durable (SQLite store, 2 clients, chats timed to their ack)\n")
    print("| offered chats/s | delivered | acks/s | ack p50 ms | ack p99 ms | server CPU us/delivery |")
    print("|---|---|---|---|---|---|")
    for rate, r in durable:
        e = r["extra"]
        print("| %d | %.1f %% | %.0f | %.2f | %.2f | %s |" % (rate, r["delivered_pct"], e.get("acks_per_s", 0),
              e.get("ack_p50_us", 0) / 1000, e.get("ack_p99_us", 0) / 1000,
              "%.2f" % r["server_cpu_us_per_delivery"] if r["server_cpu_us_per_delivery"] else "-"))
    print()

print("### connect (connection storm, 200 handshakes in flight)\n")
print("| server | connections | connects/s | handshake p50 ms | p99 ms | server CPU us/connect | errors |")
print("|---|---|---|---|---|---|---|")
for kind in ("chatd", "baseline"):
    r = by.get((kind, "connect"))
    if r:
        print("| %s | %d | %.0f | %.2f | %.2f | %.1f | %d |" % (kind, r["clients"], r["extra"].get("connects_per_s", 0), r["p50_us"] / 1000,
              r["p99_us"] / 1000, r["extra"].get("server_cpu_us_per_connect", 0), r["errors"]))
print()

print("### join storm and reconnect (every client into one room, reading from its first moment)\n")
print("| server | scenario | clients | connects/s | handshake p50 ms | p99 ms | server CPU us/connect | frames/client | closes | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
for kind in ("chatd", "baseline"):
    for label in ("join-storm", "reconnect"):
        r = by.get((kind, label))
        if r:
            closes = sum(r["closes"].values())
            print("| %s | %s | %d | %.0f | %.2f | %.2f | %.1f | %.1f | %d | %d |" % (kind, label, r["clients"], r["extra"].get("connects_per_s", 0),
                  r["p50_us"] / 1000, r["p99_us"] / 1000, r["extra"].get("server_cpu_us_per_connect", 0),
                  r["extra"].get("frames_per_client", 0), closes, r["errors"]))
print()

deflate = by.get(("chatd", "deflate-400"))
plain = by.get(("chatd", "fanout-400"))
if deflate and plain:
    print("### permessage-deflate (chatd, fan-out at 400 msg/s to 1000 clients)\n")
    print("| receivers | delivered | p99 ms | server CPU us/delivery | user-space us/delivery | bytes on the wire per delivery | generator CPU % |")
    print("|---|---|---|---|---|---|---|")
    for name, r in (("plain", plain), ("permessage-deflate", deflate)):
        e = r["extra"]
        print("| %s | %.1f %% | %.1f | %.2f | %.2f | %.0f | %.0f |" % (name, r["delivered_pct"], r["p99_us"] / 1000,
              r["server_cpu_us_per_delivery"] or 0, e.get("server_user_us_per_delivery", 0),
              e.get("wire_bytes_per_delivery", 0), r["generator_cpu_pct"]))
    print()

print("### idle (connections held; server RSS growth)\n")
print("| server | connections | RSS before MiB | RSS after MiB | bytes/connection | of it anonymous (heap) | extrapolated GiB per 1M |")
print("|---|---|---|---|---|---|---|")
for kind in ("chatd", "baseline"):
    r = by.get((kind, "idle"))
    if r and r["extra"]:
        e = r["extra"]
        print("| %s | %d | %.1f | %.1f | %.0f | %.0f | %.2f |" % (kind, r["clients"], e["server_rss_before_mib"], e["server_rss_after_mib"],
              e["server_bytes_per_conn"], e.get("server_anon_bytes_per_conn", 0), e["extrapolated_gib_per_1m_conns"]))
print()

cross = [(l, r) for (k, l), r in by.items() if l.startswith(("cross-node", "single-node"))]
if cross:
    print("### cross-node through Redis vs one node (1000 clients, same rate)\n")
    print("| setup | deliveries/s | delivered | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for l, r in sorted(cross):
        print("| %s | %.0f | %.1f %% | %.2f | %.2f |" % (l, r["deliveries_per_s"], r["delivered_pct"], r["p50_us"] / 1000, r["p99_us"] / 1000))
    print()
