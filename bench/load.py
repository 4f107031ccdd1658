#!/usr/bin/env python3
"""Side-by-side load benchmark: the machine's static-response limit, HAProxy, and the gateway.

Each proxy runs pinned to core 0 and the load generator to core 1, and the targets of a
scenario run interleaved (A/B/C/A/B/C, ...) so that drift of a shared, noisy machine hits all of
them alike. Ratios come from the same run. bench/run is the entry point; BENCHMARKS.md records
results.

Closed loop (wrk, keep-alive connections, a fixed duration) measures maximum throughput, CPU per
request and latency under saturation; open loop (oha at a fixed rate with latency correction)
measures latency below the knee, where closed-loop numbers understate queueing; one request at
a time (wrk over one connection, cache off) measures the hop and the work with no queueing.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = os.path.join(REPO, "tests", "data", "keys")
BINARY = os.path.join(REPO, "target", "release", "bms-console-gateway")
PROJECT = "bbf1946d374b44a0a2a95533562ba954"
ISSUER = "https://idp.bench.invalid"
AUDIENCE = "bms-console-gateway"
BODY = '{"remote_console":{"protocol":"serial","type":"serial"}}'
PROXY_CORE, LOAD_CORE = "0", "1"
# server.busy_poll_us of the busy-polling gateway runs: long enough to bridge the gaps between
# requests at the open-loop rate, so the runtime never sleeps while the run lasts.
BUSY_POLL_US = 2000
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {seconds}s")


def fill(template_path, out_path, **values):
    text = open(template_path).read()
    for name, value in values.items():
        text = text.replace(f"@{name}@", str(value))
    open(out_path, "w").write(text)
    return out_path


def process_tree_cpu_seconds(pid):
    """User+system CPU of a process and its direct children (nginx workers)."""
    pids = [pid]
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / CLK_TCK


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Target:
    """One server under test: how to start it pinned to the proxy core (and, for the gateway,
    its admin port, whose metrics split its latency)."""

    def __init__(self, name, command, port, admin=None):
        self.name, self.command, self.port, self.admin = name, command, port, admin
        self.proc = None

    def start(self, logdir):
        log = open(os.path.join(logdir, f"{self.name}.log"), "ab")
        self.proc = subprocess.Popen(
            ["taskset", "-c", PROXY_CORE] + self.command, stdout=log, stderr=log
        )
        wait_for_port(self.port, self.proc)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wrk(port, tokens_file, servers, seconds, connections):
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
         "-s", os.path.join(REPO, "bench", "wrk.lua"), f"http://127.0.0.1:{port}",
         "--", tokens_file, PROJECT, str(servers)],
        capture_output=True, text=True, check=True,
    ).stdout
    line = next(l for l in out.splitlines() if l.startswith("BENCH-JSON "))
    result = json.loads(line[len("BENCH-JSON "):])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(v for k, v in result.items() if k.startswith("errors_"))
    return result


def warm_up(port, warm_tokens, servers, connections):
    """Fills caches and pools: sends every warm-up token at least once, so that a "tokens
    reused" run measures reuse and not the first sight of half its tokens. Each wrk run starts
    at the first token, so one run long enough for all of them is sent (at most 30 s)."""
    needed = sum(1 for _ in open(warm_tokens))
    first = wrk(port, warm_tokens, servers, 1, connections)["requests"]
    if first < needed:
        seconds = min(30, -(-needed * 13 // (10 * max(first, 1))))
        wrk(port, warm_tokens, servers, seconds, connections)


def closed_loop(target, tokens, warm_tokens, servers, seconds, connections, logdir):
    target.start(logdir)
    try:
        warm_up(target.port, warm_tokens, servers, connections)
        cpu0 = process_tree_cpu_seconds(target.proc.pid)
        result = wrk(target.port, tokens, servers, seconds, connections)
        cpu = process_tree_cpu_seconds(target.proc.pid) - cpu0
        result["cpu_us_per_request"] = cpu * 1e6 / max(result["requests"], 1)
        result["rss_mib"] = rss_mib(target.proc.pid)
        return result
    finally:
        target.stop()


def oha(url, token, rate, seconds, connections, method="POST"):
    command = ["taskset", "-c", LOAD_CORE, "oha", "--no-tui", "--output-format", "json",
               "-z", f"{seconds}s", "-q", str(rate), "--latency-correction",
               "-c", str(connections), "-m", method, "-T", "application/json", "-d", BODY,
               "--rand-regex-url", url]
    if token:
        command[-1:-1] = ["-H", f"Authorization: Bearer {token}"]
    report = json.loads(subprocess.run(command, capture_output=True, text=True,
                                       check=True).stdout)
    pct = report["latencyPercentiles"]
    codes = report.get("statusCodeDistribution", {})
    # Requests still in flight when the duration ends are cut off by oha itself, not failed.
    failures = {k: v for k, v in report.get("errorDistribution", {}).items()
                if k != "aborted due to deadline"}
    if failures:
        print(f"    oha errors: {failures}", flush=True)
    return {
        "rps": report["summary"]["requestsPerSec"],
        "p50_us": pct["p50"] * 1e6, "p99_us": pct["p99"] * 1e6, "p999_us": pct["p99.9"] * 1e6,
        "errors": sum(v for k, v in codes.items() if not k.startswith("2"))
        + sum(failures.values()),
    }


def duration_sums(admin):
    """(seconds, count) of the gateway's remote_console requests and of its upstream calls,
    from its own histograms."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    found = {}
    for line in text.splitlines():
        for key, prefix in (("request", "bmsgw_http_request_duration_seconds"),
                            ("upstream", "bmsgw_upstream_request_duration_seconds")):
            for part in ("sum", "count"):
                if line.startswith(f"{prefix}_{part}") and (
                        key == "upstream" or 'route="remote_console"' in line):
                    found[f"{key}_{part}"] = found.get(f"{key}_{part}", 0) + float(line.split()[-1])
    return found


def open_loop(target, token, rate, seconds, connections, logdir, path):
    if target.proc is None or target.proc.poll() is not None:
        target.start(logdir)
    try:
        url = f"http://127.0.0.1:{target.port}{path}"
        oha(url, token, rate, 1, connections)  # warm-up
        before = duration_sums(target.admin) if target.admin else None
        result = oha(url, token, rate, seconds, connections)
        if before is not None:
            # The gateway's own view: mean time from request to answer, and of that, mean time
            # waiting for the upstream stub; the difference is what the gateway itself spent.
            after = duration_sums(target.admin)
            d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            if d.get("request_count"):
                result["inside_mean_us"] = 1e6 * d["request_sum"] / d["request_count"]
                upstream_share = d.get("upstream_sum", 0) / d["request_count"]
                result["upstream_mean_us"] = 1e6 * upstream_share
        return result
    finally:
        target.stop()


def one_at_a_time(targets, tokens, servers, seconds, rounds, logdir):
    """Cache-off latency with no queueing at all: wrk over one keep-alive connection, each
    request sent when the previous answer arrived. The open-loop runs mix the hop's cost with
    queueing behind the requests that arrived together; this isolates the hop and the work."""
    runs = {}
    for round_no in range(rounds):
        for t in targets:
            if t.command:
                t.start(logdir)
            try:
                wrk(t.port, tokens, servers, 1, 1)  # warm-up: every token verified, pools filled
                r = wrk(t.port, tokens, servers, seconds, 1)
            finally:
                t.stop()
            runs.setdefault(t.name, []).append(r)
            print(f"  [one at a time] round {round_no + 1} {t.name}: p50 {r['p50_us']:.0f} us, "
                  f"p99 {r['p99_us']:.0f} us, errors {r['errors']}", flush=True)
    return {name: median_run(rs) for name, rs in runs.items()}


def redis_answers():
    """The Redis-backed gateway runs only where a Redis answers on 127.0.0.1:6379."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        print("bench: no Redis on 127.0.0.1:6379; the gateway-redis runs are skipped")
        return False


def median_run(runs):
    keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float))]
    return {k: statistics.median(r[k] for r in runs) for k in keys} | {"runs": len(runs)}


def mint(config, key, kid, count, users, out):
    with open(out, "w") as f:
        subprocess.run([os.path.join(REPO, "target", "release", "examples", "bench_tokens"),
                        config, key, kid, str(count), str(users)], stdout=f, check=True)
    return out


def gateway_config(path, port, admin, stub_port, ttl, user_limit, workdir, algorithms,
                   redis_prefix=None, busy_poll_us=0):
    shared = "" if redis_prefix is None else f"""
[redis]
url = "redis://127.0.0.1:6379"
key_prefix = "{redis_prefix}"
timeout_ms = 50
"""
    backend = "local" if redis_prefix is None else "redis"
    open(path, "w").write(f"""
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
busy_poll_us = {busy_poll_us}

[auth]
[[auth.issuers]]
name = "bench"
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = {json.dumps(algorithms)}
pem_keys = [
  {{ kid = "bench-es256", alg = "ES256", file = "{KEYS}/es256-public.pem" }},
  {{ kid = "bench-rs256", alg = "RS256", file = "{KEYS}/rs256-public.pem" }},
]

[rate_limit]
backend = "{backend}"
requests_per_second = {user_limit}
burst = {user_limit}

[cache]
backend = "{backend}"
encryption_key = "file:{workdir}/cache-key"
ttl_seconds = {ttl}
max_entries = 100000

[[accounts]]
name = "bench"
endpoint = "http://127.0.0.1:{stub_port}"
region = "cn-north-4"
projects = ["{PROJECT}"]
access_key = "file:{workdir}/ak"
secret_key = "file:{workdir}/sk"

[[policy.rules]]
name = "bench"
subjects = ["*"]
projects = ["{PROJECT}"]

[upstream.quota]
# The stub has no cloud quota to protect; the gateway's own cap would throttle the cache fill.
requests_per_second = 1000000
burst = 100000

[logging]
level = "warn"
{shared}""")
    return path


def make_workdir(prefix):
    """A temporary directory with a logs/ folder and the credentials and cache key that the
    gateway configs written here refer to (bench values, not secrets)."""
    work = tempfile.mkdtemp(prefix=prefix)
    logdir = os.path.join(work, "logs")
    os.makedirs(logdir)
    open(os.path.join(work, "ak"), "w").write("HPUABENCHAK00000001")
    open(os.path.join(work, "sk"), "w").write("bench-secret-key-not-a-real-one")
    open(os.path.join(work, "cache-key"), "w").write("bench-cache-encryption-key-0123456789abcdef")
    return work, logdir


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a few seconds of each, to check it runs")
    ap.add_argument("--seconds", type=int, default=10, help="measured seconds per closed-loop run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per scenario")
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--servers", type=int, default=1000)
    ap.add_argument("--fresh-tokens", type=int, default=150000,
                    help="tokens for the never-reused scenarios (should exceed requests sent)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rate", type=int, default=0,
                    help="open-loop rate (req/s); default: half the slower proxy's closed-loop rate")
    ap.add_argument("--only", metavar="TEXT",
                    help="run only the closed-loop scenarios whose title contains TEXT (e.g. "
                         "'fresh'); the open-loop runs need the ES256 cache-hit scenario")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--memory-minutes", type=int, default=10,
                    help="memory run: minutes of further traffic after the fill")
    ap.add_argument("--memory", action="store_true",
                    help="the memory run instead: 1,000,000 distinct users through the limiter "
                         "and 100,000 servers into the URL cache, RSS after each step")
    args = ap.parse_args()
    if args.memory:
        return memory_run(args)
    if args.smoke:
        args.seconds, args.rounds, args.users, args.servers = 2, 1, 500, 100
        args.fresh_tokens = 2000
    if os.cpu_count() < 2:
        sys.exit("bench: needs two cores (one for the proxy, one for the load generator)")

    work, logdir = make_workdir("bmsgw-bench-")
    # Per user and second, for both proxies: decided on every request, never reached (the
    # open-loop runs send everything as one user).
    user_limit = 1000000

    stub_port, static_port = free_port(), free_port()
    nginx_stub = fill(os.path.join(REPO, "bench", "nginx.conf"), os.path.join(work, "stub.conf"),
                      PORT=stub_port, DIR=work)
    nginx_static = fill(os.path.join(REPO, "bench", "nginx.conf"),
                        os.path.join(work, "static.conf"), PORT=static_port, DIR=work)
    # The upstream stub shares the load generator's core, so the measured core holds only the
    # server under test.
    stub_log = open(os.path.join(logdir, "stub.log"), "ab")
    stub = subprocess.Popen(["taskset", "-c", LOAD_CORE, "nginx", "-c", nginx_stub, "-p", work],
                            stdout=stub_log, stderr=stub_log)
    wait_for_port(stub_port, stub)

    def haproxy(cache):
        port = free_port()
        cfg = fill(os.path.join(REPO, "bench", "haproxy.cfg"),
                   os.path.join(work, f"haproxy-{port}.cfg"), PORT=port, STUB_PORT=stub_port,
                   KEYS=KEYS, ISSUER=ISSUER, AUDIENCE=AUDIENCE, USER_LIMIT=user_limit,
                   CACHE_TTL=30,
                   CACHE_USE="http-request cache-use consoles" if cache else "",
                   CACHE_STORE="http-response cache-store consoles" if cache else "")
        return Target("haproxy" + ("" if cache else "-nocache"), ["haproxy", "-f", cfg], port)

    def gateway(cache, redis=False, busy_poll=False):
        port, admin = free_port(), free_port()
        prefix = f"bmsgw-bench:{port}:" if redis else None
        cfg = gateway_config(os.path.join(work, f"gateway-{port}.toml"), port, admin,
                             stub_port, 30 if cache else 0, user_limit, work, ["ES256", "RS256"],
                             prefix, BUSY_POLL_US if busy_poll else 0)
        name = ("gateway" + ("-redis" if redis else "") + ("" if cache else "-nocache")
                + ("-busypoll" if busy_poll else ""))
        return Target(name, [BINARY, "serve", "--config", cfg], port, admin)

    static = Target("static", ["nginx", "-c", nginx_static, "-p", work], static_port)
    # The stub's answer served from the proxy core: calling the stub directly the way a client
    # of the gateway must reach it, across cores, where the stub itself shares the load
    # generator's core and answers it without a cross-core wake-up.
    far_stub = Target("stub-on-proxy-core", ["nginx", "-c", nginx_static, "-p", work],
                      static_port)

    print(f"bench: minting tokens ({args.users} users, {args.fresh_tokens} fresh)", flush=True)
    mint_es = gateway_config(os.path.join(work, "mint-es.toml"), 1, 2, 3, 30, 1, work,
                             ["ES256"])
    mint_rs = gateway_config(os.path.join(work, "mint-rs.toml"), 1, 2, 3, 30, 1, work,
                             ["RS256"])
    es_key, rs_key = os.path.join(KEYS, "es256-private.pem"), os.path.join(KEYS, "rs256-private.pem")
    tokens = {
        "es256-reused": mint(mint_es, es_key, "bench-es256", args.users, args.users,
                             os.path.join(work, "es256-reused.txt")),
        "rs256-reused": mint(mint_rs, rs_key, "bench-rs256", args.users, args.users,
                             os.path.join(work, "rs256-reused.txt")),
        "es256-fresh": mint(mint_es, es_key, "bench-es256", args.fresh_tokens, args.users,
                            os.path.join(work, "es256-fresh.txt")),
        "rs256-fresh": mint(mint_rs, rs_key, "bench-rs256", args.fresh_tokens, args.users,
                            os.path.join(work, "rs256-fresh.txt")),
        # One connection sends a few thousand requests a second: few enough tokens that the
        # one-second warm-up verifies them all.
        "es256-few": mint(mint_es, es_key, "bench-es256", 100, 100,
                          os.path.join(work, "es256-few.txt")),
    }
    forward_port = free_port()
    forward_conf = fill(os.path.join(REPO, "bench", "nginx-forward.conf"),
                        os.path.join(work, "forward.conf"), PORT=forward_port,
                        STUB_PORT=stub_port, DIR=work)
    forward = Target("forward-only", ["nginx", "-c", forward_conf, "-p", work], forward_port)

    scenarios = [
        ("es256, tokens reused, cache hit", "es256-reused", [static, haproxy(True), gateway(True)]
         + ([gateway(True, redis=True)] if redis_answers() else [])),
        ("rs256, tokens reused, cache hit", "rs256-reused", [haproxy(True), gateway(True)]),
        ("es256, fresh token per request, cache hit", "es256-fresh",
         [haproxy(True), gateway(True)]),
        ("rs256, fresh token per request, cache hit", "rs256-fresh",
         [haproxy(True), gateway(True)]),
        ("es256, tokens reused, cache off", "es256-reused", [haproxy(False), gateway(False)]),
    ]
    if args.only:
        scenarios = [s for s in scenarios if args.only in s[0]]
        if not scenarios:
            stub.terminate()
            stub.wait()
            sys.exit(f"bench: no scenario title contains {args.only!r}")
    results = {"closed_loop": {}, "open_loop": {}, "one_at_a_time": {}, "args": vars(args),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        for title, token_set, targets in scenarios:
            warm = tokens[token_set.split("-")[0] + "-reused"]
            runs = {t.name: [] for t in targets}
            for round_no in range(args.rounds):
                for t in targets:
                    r = closed_loop(t, tokens[token_set], warm, args.servers, args.seconds,
                                    args.connections, logdir)
                    runs[t.name].append(r)
                    print(f"  [{title}] round {round_no + 1} {t.name}: {r['rps']:.0f} req/s, "
                          f"p99 {r['p99_us']:.0f} us, errors {r['errors']}", flush=True)
            results["closed_loop"][title] = {name: median_run(rs) for name, rs in runs.items()}
            fresh = token_set.endswith("fresh")
            for name, rs in runs.items():
                sent = max(r["requests"] for r in rs)
                if fresh and sent > args.fresh_tokens:
                    results["closed_loop"][title][name]["tokens_wrapped"] = True

        hit = results["closed_loop"].get("es256, tokens reused, cache hit")
        # The open-loop rate is set from the cache-hit scenario's closed-loop results.
        if hit is not None:
            rate = args.rate or int(0.5 * min(hit["haproxy"]["rps"], hit["gateway"]["rps"]))
            token = open(tokens["es256-reused"]).readline().strip()
            path = f"/v1/{PROJECT}/baremetalservers/00000000-0000-4000-8000-0000000000[0-9]{{2}}/remote_console"
            open_targets = [("cache hit", haproxy(True), token), ("cache hit", gateway(True), token),
                            ("cache off", Target("stub-direct", [], stub_port), None),
                            ("cache off", far_stub, None), ("cache off", forward, None),
                            ("cache off", haproxy(False), token), ("cache off", gateway(False), token),
                            ("cache off", gateway(False, busy_poll=True), token)]
            runs = {}
            for round_no in range(args.rounds):
                for label, t, tok in open_targets:
                    key = f"{label}: {t.name}"
                    if t.command:
                        r = open_loop(t, tok, rate, args.seconds, args.connections, logdir, path)
                    else:
                        r = oha(f"http://127.0.0.1:{t.port}{path}", None, rate, args.seconds,
                                args.connections)
                    runs.setdefault(key, []).append(r)
                    print(f"  [open loop {rate}/s] round {round_no + 1} {key}: p50 "
                          f"{r['p50_us']:.0f} us, p99 {r['p99_us']:.0f} us, errors {r['errors']}",
                          flush=True)
            results["open_loop"] = {"rate": rate} | {k: median_run(v) for k, v in runs.items()}

        if any("cache off" in title for title, _, _ in scenarios):
            results["one_at_a_time"] = one_at_a_time(
                [Target("stub-direct", [], stub_port), far_stub, forward, haproxy(False),
                 gateway(False), gateway(False, busy_poll=True)],
                tokens["es256-few"], args.servers, args.seconds, args.rounds, logdir)
    finally:
        for t in [static]:
            t.stop()
        stub.terminate()
        stub.wait()

    report(results)
    if args.json:
        json.dump(results, open(args.json, "w"), indent=2)
    errors = sum(r.get("errors", 0) for s in results["closed_loop"].values() for r in s.values())
    errors += sum(r.get("errors", 0) for k, r in results["open_loop"].items() if k != "rate")
    errors += sum(r.get("errors", 0) for r in results["one_at_a_time"].values())
    shutil.rmtree(work, ignore_errors=True)
    if errors and args.smoke:
        # The smoke run checks that the benchmark still runs end to end, on whatever machine CI
        # has; its numbers are never used, so failed requests are reported, not fatal.
        print(f"bench: {errors} requests failed during the smoke run")
    elif errors:
        sys.exit(f"bench: {errors} requests failed; the numbers above are not valid")


def memory_run(args):
    """RSS of the gateway after 1,000,000 distinct users (each with its own token) were
    decided by the rate limiter and 100,000 distinct servers were put in the URL cache, then
    over a further stretch of traffic from those users, to see that it stays flat."""
    users = 20000 if args.smoke else 1000000
    servers = 1000 if args.smoke else 100000
    work, logdir = make_workdir("bmsgw-bench-mem-")
    stub_port = free_port()
    stub_conf = fill(os.path.join(REPO, "bench", "nginx.conf"), os.path.join(work, "stub.conf"),
                     PORT=stub_port, DIR=work)
    stub = subprocess.Popen(["taskset", "-c", LOAD_CORE, "nginx", "-c", stub_conf, "-p", work])
    wait_for_port(stub_port, stub)
    port = free_port()
    # The default limits and cache size; a TTL long enough that every cached server stays.
    cfg = gateway_config(os.path.join(work, "gateway.toml"), port, free_port(), stub_port, 3600,
                         1000000, work, ["ES256"])
    print(f"bench: minting {users} tokens for {users} users", flush=True)
    tokens = mint(cfg, os.path.join(KEYS, "es256-private.pem"), "bench-es256", users, users,
                  os.path.join(work, "tokens.txt"))
    gateway = Target("gateway", [BINARY, "serve", "--config", cfg], port)
    gateway.start(logdir)
    samples = [("started", rss_mib(gateway.proc.pid))]
    try:
        # One pass over every token: each wrk run sends them in order from the first, so one
        # run long enough for all of them (timed from a first second) covers every user.
        first = wrk(port, tokens, servers, 1, args.connections)["requests"]
        seconds = -(-users * 13 // (10 * max(first, 1)))
        sent = wrk(port, tokens, servers, seconds, args.connections)["requests"]
        if sent < users:
            print(f"bench: only {sent} of the {users} users were reached", flush=True)
        samples.append((f"{min(sent, users)} users, {servers} servers cached", rss_mib(gateway.proc.pid)))
        for minute in range(args.memory_minutes):
            wrk(port, tokens, servers, 60, args.connections)
            samples.append((f"+{minute + 1} min of traffic", rss_mib(gateway.proc.pid)))
    finally:
        gateway.stop()
        stub.terminate()
        stub.wait()
    print("\n## Memory (RSS of the gateway)\n")
    print("| after | RSS MiB |")
    print("|---|---:|")
    for label, rss in samples:
        print(f"| {label} | {rss:.1f} |")
    shutil.rmtree(work, ignore_errors=True)


def report(results):
    print("\n## Closed loop (wrk, 64 keep-alive connections)\n")
    print("| scenario | server | req/s | p50 µs | p99 µs | p99.9 µs | CPU µs/req |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for title, servers in results["closed_loop"].items():
        for name, r in servers.items():
            wrapped = " (tokens wrapped)" if r.get("tokens_wrapped") else ""
            print(f"| {title} | {name}{wrapped} | {r['rps']:.0f} | {r['p50_us']:.0f} | "
                  f"{r['p99_us']:.0f} | {r['p999_us']:.0f} | {r['cpu_us_per_request']:.1f} |")
    print("\n### Ratios\n")
    for title, servers in results["closed_loop"].items():
        gw = next(v for k, v in servers.items() if k in ("gateway", "gateway-nocache"))
        hp = next(v for k, v in servers.items() if k.startswith("haproxy"))
        line = f"- {title}: gateway/HAProxy = {gw['rps'] / hp['rps']:.2f}×"
        if "static" in servers:
            line += f", gateway/static limit = {100 * gw['rps'] / servers['static']['rps']:.0f}%"
        if "gateway-redis" in servers:
            line += (f", gateway with Redis/HAProxy = "
                     f"{servers['gateway-redis']['rps'] / hp['rps']:.2f}×")
        print(line)
    report_one_at_a_time(results["one_at_a_time"])
    ol = results["open_loop"]
    if not ol:
        return
    print(f"\n## Open loop (oha, {ol['rate']} req/s, latency-corrected)\n")
    print("| case | p50 µs | p99 µs | p99.9 µs |")
    print("|---|---:|---:|---:|")
    for key, r in ol.items():
        if key != "rate":
            print(f"| {key} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {r['p999_us']:.0f} |")
    report_added({k.removeprefix("cache off: "): v for k, v in ol.items()
                  if k.startswith("cache off: ")})
    for name in ("gateway-nocache", "gateway-nocache-busypoll"):
        via = ol.get(f"cache off: {name}")
        if via and "inside_mean_us" in via:
            print(f"- {name}'s own histograms: {via['inside_mean_us']:.0f} µs mean from request "
                  f"to answer, of which {via['upstream_mean_us']:.0f} µs waiting for the stub, so "
                  f"{via['inside_mean_us'] - via['upstream_mean_us']:.0f} µs of its own work and "
                  "scheduling")


def report_added(runs):
    """What each cache-off server adds at p50 over calling the stub directly: on the load
    generator's own core (no cross-core wake-up at all) and on the proxy core (the same cores a
    request through a proxy crosses)."""
    near, far = runs.get("stub-direct"), runs.get("stub-on-proxy-core")
    if not near:
        return
    print("\n| server | adds at p50 over the stub on the load core | over the stub on the proxy core |")
    print("|---|---:|---:|")
    for name, r in runs.items():
        if name.startswith("stub-"):
            continue
        over_far = f"{r['p50_us'] - far['p50_us']:.0f} µs" if far else "-"
        print(f"| {name} | {r['p50_us'] - near['p50_us']:.0f} µs | {over_far} |")


def report_one_at_a_time(runs):
    if not runs:
        return
    print("\n## One request at a time (cache off; wrk, one keep-alive connection)\n")
    print("| server | p50 µs | p99 µs | req/s |")
    print("|---|---:|---:|---:|")
    for name, r in runs.items():
        print(f"| {name} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {r['rps']:.0f} |")
    report_added(runs)


if __name__ == "__main__":
    main()
