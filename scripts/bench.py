#!/usr/bin/env python3
"""Shoal's worker benchmark: prints a table; never a pass/fail test.

Runs SQS and SNS on fauxqs (fast, flat as queues grow) and the job ledger's DynamoDB on
dynalite (AWS_ENDPOINT_URL_DYNAMODB; deploy/local/dynalite.mjs, which keeps connections open
as DynamoDB does, where moto closes each; --dynamodb moto for the old figures), all on
loopback, and measures, for the release build of shoal-worker:
  - canary jobs per second and worker CPU seconds per 1,000 jobs, for 1, 2 and 4 workers
    with the ledger (as deployed), and for one worker without it (--no-ledger);
  - SQS+SNS API calls per job and the ledger's DynamoDB calls per job (from the workers' own
    shoal_aws_api_calls_total);
  - resident memory idle and with 500 jobs in flight;
  - enqueue-to-completion latency (send -> completion event received) on an idle queue, with
    the ledger and without;
  - a baseline on the same machine: a plain boto3 receive + batch-delete loop over bare
    messages (no events), so the figures read as ratios, not machine-dependent absolutes;
  - the floor Shoal is measured against: the AWS SDK for Rust making exactly the worker's
    calls per ten jobs (receive ten, publish ten events of Shoal's size, delete ten) with the
    worker's own clients and nothing else (bench/src/bin/sdk-floor.rs). The worker's CPU
    per job over the floor's is what Shoal itself costs on top of the SDK.

Usage: scripts/bench (which builds and sets SHOAL_BIN_DIR), or
       SHOAL_BIN_DIR=target/release python3 scripts/bench.py [--jobs N]

To tell whether a change pays, keep a copy of the worker from before it and compare:
       mkdir before && cp "$CARGO_TARGET_DIR/release/shoal-worker" before/   # before the change
       scripts/bench --compare before [--repeat 5] [--jobs 20000]
runs one worker of this build and of each other directory's shoal-worker in turn, --repeat
times, beside the boto3 loop, and prints medians: runs interleaved on the same machine are
far steadier than one run each, minutes apart.
"""

import argparse
import collections
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SHOAL_BIN_DIR", os.path.join(ROOT, "target", "release"))
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto():
    """moto, for the ledger's DynamoDB: fauxqs serves SQS and SNS alone."""
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "deploy/local/emulator.py"),
                             "--until-stdin-closes"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


def start_dynalite():
    """dynalite behind its front, for the ledger's DynamoDB (see deploy/local/dynalite.mjs)."""
    proc = subprocess.Popen(["node", os.path.join(ROOT, "deploy/local/dynalite.mjs")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


def start_fauxqs():
    proc = subprocess.Popen(["node", os.path.join(ROOT, "deploy/local/fauxqs.mjs")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid, field="VmRSS"):
    """Resident memory now (VmRSS), or its peak so far (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def metrics(port):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def metric_sum(values, prefix, contains=()):
    return sum(v for k, v in values.items() if k.startswith(prefix) and all(c in k for c in contains))


class Bench:
    def __init__(self, endpoint, dynamodb_endpoint):
        self.endpoint = endpoint
        self.env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ENDPOINT_URL_DYNAMODB=dynamodb_endpoint,
                        AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                        RUST_LOG="warn")
        session = boto3.session.Session(aws_access_key_id="bench", aws_secret_access_key="bench",
                                        region_name="us-east-1")
        self.sqs = session.client("sqs", endpoint_url=endpoint)
        self.workers = []
        self.worker_bin = os.path.join(BIN, "shoal-worker")

    def stack(self, ledger=True):
        """A fresh stack; with `ledger`, its table on moto (the workers then use it)."""
        out = subprocess.run([os.path.join(BIN, "shoal-producer"), "stack", "create",
                              "--prefix", f"bench-{uuid.uuid4().hex[:8]}"] + ([] if ledger else ["--no-ledger"]),
                             env=self.env, check=True, capture_output=True, text=True).stdout
        return dict(line.split("=", 1) for line in out.split())

    def enqueue_canaries(self, stack, n, sleep_ms=0):
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for start in range(0, n, 10):
            entries = []
            for i in range(start, min(n, start + 10)):
                body = {"schema_version": 1, "job_id": f"bench-{uuid.uuid4().hex}", "submitted_at": now,
                        "kind": "canary", "params": {"sleep_ms": sleep_ms}}
                entries.append({"Id": str(i), "MessageBody": json.dumps(body),
                                "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "canary"},
                                                      "schema": {"DataType": "Number", "StringValue": "1"}}})
            self.sqs.send_message_batch(QueueUrl=stack["SHOAL_QUEUE_URL"], Entries=entries)

    def start_worker(self, stack, concurrency=64, wait=20, extra_env=None):
        port = free_port()
        ledger = (["--ledger-table", stack["SHOAL_LEDGER_TABLE"]] if "SHOAL_LEDGER_TABLE" in stack
                  else ["--no-ledger"])
        proc = subprocess.Popen([self.worker_bin,
                                 "--queue-url", stack["SHOAL_QUEUE_URL"], "--topic-arn", stack["SHOAL_TOPIC_ARN"],
                                 "--concurrency", str(concurrency), "--wait-time-seconds", str(wait),
                                 "--metrics-addr", f"127.0.0.1:{port}"] + ledger,
                                env={**self.env, **(extra_env or {})})
        self.workers.append(proc)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                return proc, port
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("worker did not become ready")

    def stop_workers(self):
        for proc in self.workers:
            proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            proc.wait(timeout=60)
        self.workers = []

    def startup_cpu(self):
        """CPU a worker spends starting up on an empty queue, subtracted from each run."""
        proc, _ = self.start_worker(self.stack())
        time.sleep(0.5)
        cpu = cpu_seconds(proc.pid)
        self.stop_workers()
        return cpu

    def throughput(self, n_workers, jobs, startup, extra_env=None, ledger=True):
        stack = self.stack(ledger)
        self.enqueue_canaries(stack, jobs)
        started = time.monotonic()
        workers = [self.start_worker(stack, extra_env=extra_env) for _ in range(n_workers)]
        while True:
            snapshot = [metrics(port) for _, port in workers]
            done = sum(metric_sum(m, "shoal_jobs_succeeded_total") for m in snapshot)
            if done >= jobs:
                break
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        cpu = sum(max(cpu_seconds(p.pid) - startup, 0.0) for p, _ in workers)
        calls = sum(metric_sum(m, "shoal_aws_api_calls_total", ('service="sqs"',)) +
                    metric_sum(m, "shoal_aws_api_calls_total", ('service="sns"',)) for m in snapshot)
        ledger_calls = sum(metric_sum(m, "shoal_aws_api_calls_total", ('service="dynamodb"',)) for m in snapshot)
        by_op = collections.Counter()
        for m in snapshot:
            for series, value in m.items():
                if series.startswith("shoal_aws_api_calls_total{") and 'service="ec2"' not in series:
                    op = series.split('operation="', 1)[1].split('"', 1)[0]
                    by_op[op] += value / jobs
        self.last_calls_by_operation = by_op
        self.last_ledger_calls = ledger_calls / jobs
        self.stop_workers()
        return jobs / elapsed, cpu / jobs * 1000, calls / jobs

    def curve(self, jobs, startup):
        """One worker draining `jobs` canaries: CPU s per 1,000 jobs and peak resident memory."""
        stack = self.stack()
        self.enqueue_canaries(stack, jobs)
        proc, port = self.start_worker(stack)
        while metric_sum(metrics(port), "shoal_jobs_succeeded_total") < jobs:
            time.sleep(0.05)
        cpu = max(cpu_seconds(proc.pid) - startup, 0.0)
        peak = rss_mb(proc.pid, "VmHWM")
        self.stop_workers()
        self.sqs.delete_queue(QueueUrl=stack["SHOAL_QUEUE_URL"])
        return cpu / jobs * 1000, peak

    def idle_calls(self, seconds=65):
        """SQS+SNS calls per minute of one worker with nothing to do."""
        stack = self.stack()
        _, port = self.start_worker(stack)
        before = metrics(port)
        time.sleep(seconds)
        after = metrics(port)
        self.stop_workers()
        count = lambda m: (metric_sum(m, "shoal_aws_api_calls_total", ('service="sqs"',)) +
                           metric_sum(m, "shoal_aws_api_calls_total", ('service="sns"',)))
        return (count(after) - count(before)) / seconds * 60

    def memory(self, in_flight):
        stack = self.stack()
        proc, port = self.start_worker(stack, concurrency=in_flight)
        time.sleep(1)
        idle = rss_mb(proc.pid)
        self.enqueue_canaries(stack, in_flight, sleep_ms=30_000)
        deadline = time.time() + 60
        while metric_sum(metrics(port), "shoal_jobs_in_flight") < in_flight and time.time() < deadline:
            time.sleep(0.1)
        held = metric_sum(metrics(port), "shoal_jobs_in_flight")
        busy = rss_mb(proc.pid)
        proc.send_signal(signal.SIGINT)
        # Signals sent back to back can coalesce into one; the second must come after the
        # worker has seen the first, to make it exit at once rather than wait out its grace.
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        self.workers = []
        return idle, busy, held

    def latency(self, samples, ledger=True):
        stack = self.stack(ledger)
        self.start_worker(stack)
        events = stack["SHOAL_EVENTS_QUEUE_URL"]
        results = []
        for _ in range(samples):
            job_id = f"lat-{uuid.uuid4().hex}"
            body = json.dumps({"schema_version": 1, "job_id": job_id, "kind": "canary",
                               "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "params": {}})
            t0 = time.monotonic()
            self.sqs.send_message(QueueUrl=stack["SHOAL_QUEUE_URL"], MessageBody=body)
            while True:
                out = self.sqs.receive_message(QueueUrl=events, WaitTimeSeconds=5, MaxNumberOfMessages=10)
                msgs = out.get("Messages", [])
                if any(json.loads(m["Body"]).get("subject") == job_id for m in msgs):
                    results.append((time.monotonic() - t0) * 1000)
                    for m in msgs:
                        self.sqs.delete_message(QueueUrl=events, ReceiptHandle=m["ReceiptHandle"])
                    break
        self.stop_workers()
        results.sort()
        return statistics.median(results), results[min(len(results) - 1, int(len(results) * 0.99))]

    def sdk_floor(self, jobs, ledger=False):
        """The SDK's floor: CPU s per 1,000 jobs of the bare loop draining `jobs` canaries,
        less what it spends starting up (measured by a run that drains none), as the
        workers' startup is subtracted from theirs. With `ledger`, it writes their records
        too, 25 a call, as the worker does."""
        stack = self.stack(ledger)
        self.enqueue_canaries(stack, jobs)

        def run(n):
            env = {**self.env, "SHOAL_QUEUE_URL": stack["SHOAL_QUEUE_URL"],
                   "SHOAL_TOPIC_ARN": stack["SHOAL_TOPIC_ARN"], "SHOAL_FLOOR_JOBS": str(n)}
            if ledger:
                env["SHOAL_LEDGER_TABLE"] = stack["SHOAL_LEDGER_TABLE"]
            else:
                env.pop("SHOAL_LEDGER_TABLE", None)
            proc = subprocess.Popen([os.path.join(BIN, "sdk-floor")], env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            if status != 0:
                raise RuntimeError("the SDK floor loop failed")
            return usage.ru_utime + usage.ru_stime

        startup = run(0)
        cpu = max(run(jobs) - startup, 0.0)
        self.sqs.delete_queue(QueueUrl=stack["SHOAL_QUEUE_URL"])
        return cpu / jobs * 1000

    def boto3_baseline(self, messages):
        """A plain boto3 consumer: receive 10, batch-delete, no events."""
        url = self.sqs.create_queue(QueueName=f"baseline-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        for start in range(0, messages, 10):
            self.sqs.send_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "MessageBody": json.dumps({"n": i})} for i in range(start, min(messages, start + 10))])
        before = time.process_time()
        done = 0
        while done < messages:
            msgs = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            if msgs:
                self.sqs.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])
                done += len(msgs)
        return (time.process_time() - before) / messages * 1000


def producer_submit(bench, lines):
    """`shoal-producer submit` of a file of `lines` canaries: jobs/s and peak resident memory."""
    import tempfile
    stack = bench.stack()
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        line = json.dumps({"kind": "canary", "params": {"sleep_ms": 0}}) + "\n"
        for _ in range(lines):
            f.write(line)
        path = f.name
    try:
        started = time.monotonic()
        proc = subprocess.Popen([os.path.join(BIN, "shoal-producer"), "--queue-url", stack["SHOAL_QUEUE_URL"],
                                 "submit", path], env=bench.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.monotonic() - started
        if status != 0:
            raise RuntimeError(f"submit failed: {proc.stderr.read().decode()[-500:]}")
        # ru_maxrss is in kilobytes on Linux.
        return lines / elapsed, usage.ru_maxrss / 1024
    finally:
        os.unlink(path)
        bench.sqs.delete_queue(QueueUrl=stack["SHOAL_QUEUE_URL"])


def otlp_sink():
    """An OTLP/HTTP endpoint that takes every export and keeps nothing: the worker's cost of
    tracing, without a collector's."""
    import http.server
    import threading

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# SQS's list price per million requests (standard queues, after the free tier).
SQS_PRICE_PER_MILLION = 0.40


def compare(bench, args):
    """One worker of each build draining the same number of canaries, interleaved, repeated."""
    builds = [BIN] + args.compare
    cpu = {b: [] for b in builds}
    baselines = []
    floors = []
    for rep in range(args.repeat):
        baselines.append(bench.boto3_baseline(args.jobs))
        floors.append(bench.sdk_floor(args.jobs))
        for build in builds:
            bench.worker_bin = os.path.join(build, "shoal-worker")
            startup = bench.startup_cpu()
            cpu[build].append(bench.throughput(1, args.jobs, startup)[1])
        print(f"run {rep + 1} of {args.repeat}: " +
              ", ".join(f"{cpu[b][-1]:.4f}" for b in builds), file=sys.stderr, flush=True)
    baseline = statistics.median(baselines)
    floor = statistics.median(floors)
    print(f"\n1 worker, {args.jobs} canary jobs per run, {args.repeat} interleaved runs per build\n")
    print("| build | CPU s per 1,000 jobs, median | min | max | vs this build | vs SDK floor | vs boto3 loop |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    this = statistics.median(cpu[builds[0]])
    for build in builds:
        med = statistics.median(cpu[build])
        label = "this build" if build == builds[0] else build
        print(f"| {label} | {med:.4f} | {min(cpu[build]):.4f} | {max(cpu[build]):.4f} | "
              f"{med / this:.2f}x | {med / floor:.2f}x | {med / baseline:.2f}x |")
    print(f"\nSDK floor (the worker's calls and nothing else), median of {args.repeat}: "
          f"{floor:.4f} CPU s per 1,000 jobs")
    print(f"boto3 loop, median of {args.repeat}: {baseline:.3f} CPU s per 1,000 bare messages")


def print_throughput(args, rows, baseline, floors, startup, by_op=None):
    """`floors`: the SDK floor without the ledger and with it; each row is read against its own."""
    floor_off, floor_on = floors
    print(f"\nShoal worker benchmark: {args.jobs} canary jobs per run, SQS+SNS on fauxqs, "
          f"the ledger's DynamoDB on {args.dynamodb}, release build\n")
    print("| workers | ledger | jobs/s | CPU s per 1,000 jobs (with events) | vs SDK floor | vs boto3 loop (no events) "
          "| SQS+SNS calls per job | ledger calls per job |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, ledger, rate, cpu, calls, ledger_calls in rows:
        floor = floor_on if ledger else floor_off
        print(f"| {n} | {'on' if ledger else 'off'} | {rate:,.0f} | {cpu:.3f} | {cpu / floor:.2f}x | "
              f"{cpu / baseline:.2f}x | {calls:.3f} | {ledger_calls:.3f} |")
    on = [r for r in rows if r[0] == 1 and r[1]]
    off = [r for r in rows if r[0] == 1 and not r[1]]
    if on and off:
        print(f"\nthe ledger, one worker: CPU per job {on[0][3] / off[0][3]:.2f}x of without it, "
              f"{on[0][5]:.3f} DynamoDB calls per job; the SDK floor with the ledger's calls "
              f"{floor_on / floor_off:.2f}x of without")
    floor = floor_off
    print(f"\nSDK floor, the worker's calls with its clients and nothing else: {floor_off:.3f} CPU s per 1,000 jobs"
          f" ({floor_on:.3f} with the ledger's)")
    print(f"boto3 receive + batch-delete loop, same machine: {baseline:.3f} CPU s per 1,000 bare messages")
    print(f"worker startup CPU (subtracted above): {startup:.3f} s")
    if by_op:
        print(f"SQS+SNS calls per job by operation ({rows[-1][0]} workers): " +
              ", ".join(f"{op} {v:.3f}" for op, v in sorted(by_op.items(), key=lambda kv: -kv[1]) if v >= 0.0005))


def tear_down(bench, fauxqs, moto):
    """Stops whatever workers a run left behind, then the emulators."""
    for proc in bench.workers:
        proc.kill()
    for emulator in (fauxqs, moto):
        emulator.stdin.close()
        emulator.wait(timeout=10)


def main():
    parser = argparse.ArgumentParser(description="Shoal worker benchmark")
    parser.add_argument("--jobs", type=int, default=10_000, help="canary jobs per throughput run")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--submit-lines", type=int, nargs="*", default=[10_000, 100_000, 1_000_000],
                        help="file sizes for the producer's submit runs")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4],
                        help="worker counts for the throughput runs")
    parser.add_argument("--curve", type=int, nargs="*", default=[1_000, 10_000, 100_000],
                        help="queue sizes one worker drains, for the cost curve")
    parser.add_argument("--quick", action="store_true",
                        help="throughput runs only (for trying a change)")
    parser.add_argument("--compare", nargs="+", metavar="DIR",
                        help="directories holding other builds' shoal-worker, to compare with this one")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs per build (--compare)")
    parser.add_argument("--dynamodb", choices=["dynalite", "moto"], default="dynalite",
                        help="the ledger's DynamoDB emulator")
    args = parser.parse_args()

    fauxqs, endpoint = start_fauxqs()
    moto, dynamodb_endpoint = start_dynalite() if args.dynamodb == "dynalite" else start_moto()
    bench = Bench(endpoint, dynamodb_endpoint)
    rows = []
    by_op = None
    if args.compare:
        try:
            compare(bench, args)
        finally:
            tear_down(bench, fauxqs, moto)
        return
    try:
        baseline = bench.boto3_baseline(args.jobs)
        floor = bench.sdk_floor(args.jobs)
        floors = (floor, bench.sdk_floor(args.jobs, ledger=True))
        startup = bench.startup_cpu()
        rate, cpu, calls = bench.throughput(1, args.jobs, startup, ledger=False)
        rows.append((1, False, rate, cpu, calls, 0.0))
        for n in args.workers:
            rate, cpu, calls = bench.throughput(n, args.jobs, startup)
            rows.append((n, True, rate, cpu, calls, bench.last_ledger_calls))
            if n == 1:
                by_op = bench.last_calls_by_operation
        if args.quick:
            print_throughput(args, rows, baseline, floors, startup, by_op)
            return
        sink, sink_url = otlp_sink()
        tracing_rows = []
        for label, ratio in (("off", None), ("on, sampled 100%", "1.0"), ("on, sampled 1%", "0.01")):
            env = None if ratio is None else {
                "OTEL_EXPORTER_OTLP_ENDPOINT": sink_url,
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": ratio,
            }
            _, cpu, _ = bench.throughput(1, args.jobs, startup, extra_env=env)
            tracing_rows.append((label, cpu))
        sink.shutdown()
        curve = [(n, *bench.curve(n, startup)) for n in args.curve]
        idle, busy, held = bench.memory(500)
        idle_per_minute = bench.idle_calls()
        submits = [(n, *producer_submit(bench, n)) for n in args.submit_lines]
        p50, p99 = bench.latency(args.latency_samples)
        p50_off, p99_off = bench.latency(args.latency_samples, ledger=False)
    finally:
        tear_down(bench, fauxqs, moto)

    print_throughput(args, rows, baseline, floors, startup, by_op)
    print("\n| tracing (1 worker, OTLP/HTTP to a sink) | CPU s per 1,000 jobs | vs off |")
    print("| --- | ---: | ---: |")
    off = tracing_rows[0][1]
    for label, cpu in tracing_rows:
        print(f"| {label} | {cpu:.3f} | {cpu / off:.2f}x |")
    print("\n| measure | value |")
    print("| --- | ---: |")
    print(f"| resident memory, idle | {idle:.1f} MB |")
    print(f"| resident memory, {held:.0f} jobs in flight | {busy:.1f} MB |")
    print(f"| enqueue to completion event, p50 (idle queue, {args.latency_samples} jobs) | {p50:.1f} ms |")
    print(f"| enqueue to completion event, p99 | {p99:.1f} ms |")
    print(f"| the same without the ledger, p50 / p99 | {p50_off:.1f} / {p99_off:.1f} ms |")
    monthly = idle_per_minute * 60 * 24 * 30 / 1e6 * SQS_PRICE_PER_MILLION
    print(f"| SQS+SNS calls per minute, one idle worker | {idle_per_minute:.1f} |")
    print(f"| an idle worker's month of those at ${SQS_PRICE_PER_MILLION:.2f} per million requests | ${monthly:.2f} |")
    print("\n| one worker draining N jobs | CPU s per 1,000 jobs | peak resident memory |")
    print("| ---: | ---: | ---: |")
    for n, cpu, rss in curve:
        print(f"| {n:,} | {cpu:.3f} | {rss:.1f} MB |")
    print("\n| `shoal-producer submit` of N lines | jobs/s | peak resident memory |")
    print("| ---: | ---: | ---: |")
    for n, rate, rss in submits:
        print(f"| {n:,} | {rate:,.0f} | {rss:.1f} MB |")


if __name__ == "__main__":
    sys.exit(main())
