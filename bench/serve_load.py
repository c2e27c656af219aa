#!/usr/bin/env python3
"""serve_load.py -- load test and soak of `kd serve`, which it starts itself.

  1. `kd serve RUN [--int8] --port 0` (RUST_LOG=warn; RAYON_NUM_THREADS=--threads if given), its
     address read from the `listening on http://HOST:PORT` line, then GET /health until 200.
  2. Closed loop, for each --concurrency C (default 1,8,64): C clients, each on its own
     keep-alive connection, send POST /predict {"inputs": TEXT} with one test row's text per
     request (client k starts at row k*rows//C and walks the split), the next request as soon
     as the answer is read, for --warmup s untimed then --seconds S. Reported: requests/s
     (= rows/s), latency p50/p99 (nearest rank, send to last byte read), errors by status (0: a
     broken connection), and from two /metrics scrapes around the timed window the server's
     batch-size histogram (kd_serve_batch_rows), the share of the window its model worker was
     busy and the rows/s while busy (kd_serve_inference_duration_seconds). Clients are spread over
     --client-procs processes (threads in each; requests are pre-encoded bytes on raw sockets, so
     the GIL costs little); the clients' CPU seconds are reported, since they share the machine.
  3. --soak MINUTES: open loop at --rate R requests/s (request k is due at start + k/R, whatever
     came back; latency is counted from when it was due, so a server that falls behind shows it),
     the server's VmRSS sampled every 10 s: first (the first sample after --soak-warmup s), last,
     max; flat when last <= first * 1.05. Errors as above.
  4. --raw-json: a `kd compare` JSON of the same run (`--int8` picks its "(int8)" entry): its
     serving.timing.rows_per_s is the raw model rate; serve's rows/s at each concurrency is
     printed as a share of it (goal: >= 90% at 64 clients). The raw rate batches length-sorted
     rows; serve batches whatever arrives together, padded to its longest row.
  5. SIGTERM; the server must exit 0 within 60 s.
Texts: the run's test split (config.toml `data`, test.csv[.gz]), title + " " + description.
Standard library only (Python >= 3.11).

    # the measurement (idle machine; kd's pool on every core but the clients', e.g. 14 of 16)
    python3 bench/serve_load.py runs/repr_evidence/b0_0 --kd target/rel/release/kd --int8 \\
        --server-cpus 0-13 --client-cpus 14-15 --raw-json /tmp/compare.json \\
        --soak 30 --rate 500 --json /tmp/serve-load.json
    # a quick check
    python3 bench/serve_load.py runs/repr_evidence/b0_0 --kd target/rel/release/kd --int8 \\
        --threads 1 --seconds 3 --warmup 1 --soak 0.5 --rate 20
"""
import argparse, csv, gzip, json, math, multiprocessing as mp, os, re, select, signal, socket, subprocess, sys
import tempfile, threading, time, tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpus(spec):
    """'0-3,8' -> {0, 1, 2, 3, 8}"""
    out = set()
    for part in filter(None, spec.split(",")):
        lo, _, hi = part.partition("-")
        out |= set(range(int(lo), int(hi or lo) + 1))
    return out


def read_texts(run, limit=0):
    cfg = tomllib.loads((ROOT / run / "config.toml").read_text())
    path = next(p for p in (ROOT / cfg["data"] / n for n in ("test.csv.gz", "test.csv")) if p.is_file())
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8", newline="") as f:
        texts = [r[1] + " " + r[2] for r in csv.reader(f) if r]
    return texts[:limit] if limit else texts


class Conn:
    """One keep-alive HTTP/1.1 connection on a raw socket; request() returns (status, body), status 0
    when the connection broke."""

    def __init__(self, host, port):
        self.addr, self.sock, self.buf = (host, port), None, b""

    def request(self, raw):
        try:
            if self.sock is None:
                self.sock = socket.create_connection(self.addr, timeout=120)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.sendall(raw)
            while b"\r\n\r\n" not in self.buf:
                self.buf += self._recv()
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(l.lower().split(": ", 1) for l in lines[1:])
            size = int(headers["content-length"])  # axum sets it on every answer kd gives
            while len(self.buf) < size:
                self.buf += self._recv()
            body, self.buf = self.buf[:size], self.buf[size:]
            if headers.get("connection") == "close":
                self.close()
            return int(lines[0].split()[1]), body
        except (OSError, ValueError, KeyError):
            self.close()
            return 0, b""

    def _recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise OSError("closed")
        return chunk

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock, self.buf = None, b""


def encode(host, port, text):
    body = json.dumps({"inputs": text}).encode()
    return (f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def closed_proc(addr, bodies, clients, n_clients, warm_end, deadline, client_cpus, out):
    """Client process: one thread per client in `clients`; sends (latencies, statuses, cpu s)."""
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    lat, codes, lock = [], {}, threading.Lock()

    def client(k):
        conn, i, mine, my_codes = Conn(*addr), k * len(bodies) // n_clients, [], {}
        while (t := time.monotonic()) < deadline:
            status = conn.request(bodies[i % len(bodies)])[0]
            i += 1
            if t >= warm_end:
                mine.append(time.monotonic() - t)
                my_codes[status] = my_codes.get(status, 0) + 1
        conn.close()
        with lock:
            lat.extend(mine)
            for c, n in my_codes.items():
                codes[c] = codes.get(c, 0) + n

    threads = [threading.Thread(target=client, args=(k,)) for k in clients]
    [t.start() for t in threads]
    [t.join() for t in threads]
    tm = os.times()
    out.send((lat, codes, tm.user + tm.system))


def get(addr, path):
    conn = Conn(*addr)
    status, body = conn.request(f"GET {path} HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\n\r\n".encode())
    conn.close()
    return status, body.decode()


def batch_hist(addr):
    """kd_serve_batch_rows ({le: cumulative count}, sum, count) and the model's busy seconds, from /metrics."""
    text = get(addr, "/metrics")[1]
    buckets = {m[0]: int(m[1]) for m in re.findall(r'kd_serve_batch_rows_bucket\{le="([^"]+)"\} (\d+)', text)}
    val = lambda name: float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))  # noqa: E731
    return buckets, val("kd_serve_batch_rows_sum"), val("kd_serve_batch_rows_count"), val("kd_serve_inference_duration_seconds_sum")


def hist_diff(a, b, seconds):
    """Batches per size range over the window between scrapes a and b, and the model's share of it."""
    (ba, sa, ca, ia), (bb, sb, cb, ib) = a, b
    out, prev_le, prev = {}, "0", 0
    for le in bb:
        n = bb[le] - ba.get(le, 0)
        lo = f"{float(prev_le) + 1:g}"
        if n - prev:
            out[f">{prev_le}" if le == "+Inf" else lo if lo == le else f"{lo}-{le}"] = n - prev
        prev_le, prev = le, n
    return dict(batches=int(cb - ca), mean_rows=(sb - sa) / max(cb - ca, 1), by_rows=out,
                model_busy=(ib - ia) / seconds, rows_per_model_s=(sb - sa) / max(ib - ia, 1e-9))


def nearest_rank(v, p):
    v = sorted(v)
    return v[min(max(math.ceil(p * len(v)), 1), len(v)) - 1] * 1e3 if v else float("nan")


def closed_loop(a, addr, bodies, conc):
    procs = min(a.client_procs, conc)
    start = time.monotonic() + 0.5
    warm_end, deadline = start + a.warmup, start + a.warmup + a.seconds
    pipes, workers = [], []
    for p in range(procs):
        recv, send = mp.Pipe(duplex=False)
        w = mp.Process(target=closed_proc, args=(addr, bodies, range(p, conc, procs), conc, warm_end, deadline,
                                                 cpus(a.client_cpus), send))
        w.start()
        pipes.append(recv)
        workers.append(w)
    time.sleep(max(0.0, warm_end - time.monotonic()))
    before, t_before = batch_hist(addr), time.monotonic()
    time.sleep(max(0.0, deadline - time.monotonic()))
    lat, codes, cpu_s = [], {}, 0.0
    for recv, w in zip(pipes, workers):
        l, c, s = recv.recv()
        w.join()
        lat += l
        cpu_s += s
        for k, n in c.items():
            codes[k] = codes.get(k, 0) + n
    time.sleep(0.2)  # the last batch's histogram entry lands before its answers leave
    hist = hist_diff(before, batch_hist(addr), time.monotonic() - t_before)
    ok = codes.get(200, 0)
    return dict(concurrency=conc, seconds=a.seconds, requests=len(lat), ok=ok, errors={str(k): n for k, n in codes.items() if k != 200},
                requests_per_s=ok / a.seconds, latency_p50_ms=nearest_rank(lat, 0.5), latency_p99_ms=nearest_rank(lat, 0.99),
                server_batches=hist, client_procs=procs, client_cpu_seconds=cpu_s)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS:"))


def soak(a, addr, bodies, server):
    """Open loop at a.rate req/s for a.soak minutes, with a.soak_conns sender threads."""
    start = time.monotonic() + 0.5
    end = start + a.soak * 60
    total = int(a.soak * 60 * a.rate)
    lat, codes, lock, samples, done = [], {}, threading.Lock(), [], [0] * a.soak_conns

    def sender(j):
        conn, mine, my_codes = Conn(*addr), [], {}
        for k in range(j, total, a.soak_conns):
            due = start + k / a.rate
            time.sleep(max(0.0, due - time.monotonic()))
            status = conn.request(bodies[k % len(bodies)])[0]
            mine.append(time.monotonic() - due)
            my_codes[status] = my_codes.get(status, 0) + 1
            done[j] += 1
        with lock:
            lat.extend(mine)
            for c, n in my_codes.items():
                codes[c] = codes.get(c, 0) + n

    threads = [threading.Thread(target=sender, args=(j,), daemon=True) for j in range(a.soak_conns)]
    [t.start() for t in threads]
    while (now := time.monotonic()) < end:
        samples.append((round(now - start, 1), rss_mb(server.pid)))
        print(f"  soak {max(0, now - start):6.0f} s: server RSS {samples[-1][1]:.1f} MB, {sum(done)} answered", flush=True)
        time.sleep(min(10.0, max(0.0, end - time.monotonic())))
    [t.join() for t in threads]
    samples.append((round(time.monotonic() - start, 1), rss_mb(server.pid)))
    warm = [s for s in samples if s[0] >= a.soak_warmup] or samples
    first, last, peak = warm[0][1], samples[-1][1], max(s[1] for s in samples)
    return dict(minutes=a.soak, rate=a.rate, requests=len(lat), ok=codes.get(200, 0),
                errors={str(k): n for k, n in codes.items() if k != 200},
                achieved_rate=codes.get(200, 0) / (time.monotonic() - start), latency_p50_ms=nearest_rank(lat, 0.5),
                latency_p99_ms=nearest_rank(lat, 0.99), rss_first_mb=first, rss_last_mb=last, rss_max_mb=peak,
                rss_flat=last <= first * 1.05, rss_samples=samples)


def raw_rate(path, run, int8):
    runs = json.loads(Path(path).read_text())["runs"]
    want = [e for e in runs if e["run"].endswith(" (int8)") == int8]
    pick = next((e for e in want if e["run"].removesuffix(" (int8)").rstrip("/") == run.rstrip("/")), want[0] if want else None)
    if not pick or "timing" not in pick["serving"]:
        sys.exit(f"{path}: no timed {'int8 ' if int8 else ''}entry for {run}")
    return pick["run"], pick["serving"]["timing"]["rows_per_s"], pick["serving"]["timing"].get("threads")


def start_server(a, log):
    cmd = [a.kd, "serve", a.run, "--port", "0"] + (["--int8"] if a.int8 else ["--dtype", a.dtype]) + a.serve_arg
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    if a.threads:
        env["RAYON_NUM_THREADS"] = str(a.threads)
    sc = cpus(a.server_cpus)
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                              preexec_fn=(lambda: os.sched_setaffinity(0, sc)) if sc else None)
    ready, _, _ = select.select([server.stdout], [], [], a.start_timeout)
    line = server.stdout.readline() if ready else ""
    m = re.match(r"listening on http://([^:]+):(\d+)", line)
    if not m:
        server.kill()
        sys.exit(f"kd serve did not start ({' '.join(cmd)}): {line!r}\n{Path(log.name).read_text()[-3000:]}")
    addr = (m.group(1), int(m.group(2)))
    for _ in range(600):
        if get(addr, "/health")[0] == 200:
            return server, addr, cmd
        time.sleep(0.1)
    sys.exit("kd serve never answered /health with 200")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", default="runs/repr_evidence/b0_0", help="run folder (relative to the repository root)")
    ap.add_argument("--kd", default=str(ROOT / "target/release/kd"))
    ap.add_argument("--int8", action="store_true", help="serve with --int8")
    ap.add_argument("--dtype", default="auto", help="kd serve --dtype (without --int8)")
    ap.add_argument("--serve-arg", action="append", default=[], help="more kd serve flags, e.g. --serve-arg=--max-wait-ms=2")
    ap.add_argument("--threads", type=int, default=0, help="RAYON_NUM_THREADS for the server (default: rayon's)")
    ap.add_argument("--server-cpus", default="", help="CPUs the server may run on, e.g. 0-13")
    ap.add_argument("--client-cpus", default="", help="CPUs the load clients may run on, e.g. 14-15")
    ap.add_argument("--client-procs", type=int, default=4, help="client processes (threads spread over them)")
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=3, help="untimed seconds before each concurrency's window")
    ap.add_argument("--rows", type=int, default=0, help="only the first N test rows' texts (0: all)")
    ap.add_argument("--soak", type=float, default=0, help="minutes of open-loop load (0: none)")
    ap.add_argument("--rate", type=float, default=200, help="soak requests/s")
    ap.add_argument("--soak-conns", type=int, default=32, help="soak sender threads/connections")
    ap.add_argument("--soak-warmup", type=float, default=60, help="seconds before the soak's first RSS sample")
    ap.add_argument("--raw-json", help="kd compare JSON of the same run: the raw model rate")
    ap.add_argument("--start-timeout", type=float, default=300)
    ap.add_argument("--json", default="serve-load.json")
    a = ap.parse_args()
    a.kd = str(Path(a.kd).resolve())
    texts = read_texts(a.run, a.rows)
    raw = raw_rate(a.raw_json, a.run, a.int8) if a.raw_json else None
    log = tempfile.NamedTemporaryFile("w+", prefix="kd-serve-", suffix=".log", delete=False)
    server, addr, cmd = start_server(a, log)
    bodies = [encode(*addr, t) for t in texts]
    print(f"{' '.join(cmd)}: http://{addr[0]}:{addr[1]} (pid {server.pid}, RSS {rss_mb(server.pid):.0f} MB, log {log.name}); "
          f"{len(texts)} texts" + (f"; raw model rate {raw[1]:.1f} rows/s ({raw[0]}, {raw[2]} threads)" if raw else ""), flush=True)
    out = dict(command=cmd, rows=len(texts), threads=a.threads or "rayon default", server_cpus=a.server_cpus,
               client_cpus=a.client_cpus, raw=dict(entry=raw[0], rows_per_s=raw[1], threads=raw[2]) if raw else None, closed=[])
    print(f"{'clients':>7s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>8s} {'batches':>8s} {'rows/batch':>10s}"
          f" {'of raw':>7s} {'busy':>5s} {'model rows/s':>12s}  batch sizes (rows: batches)")
    try:
        for conc in map(int, a.concurrency.split(",")):
            r = closed_loop(a, addr, bodies, conc)
            if raw:
                r["share_of_raw"] = r["requests_per_s"] / raw[1]
            out["closed"].append(r)
            h = r["server_batches"]
            share = f"{r['share_of_raw']:.0%}" if raw else "-"
            print(f"{conc:7d} {r['requests_per_s']:9.1f} {r['latency_p50_ms']:8.2f} {r['latency_p99_ms']:8.2f} "
                  f"{sum(r['errors'].values()):8d} {h['batches']:8d} {h['mean_rows']:10.2f} {share:>7s} {h['model_busy']:5.0%} {h['rows_per_model_s']:12.1f}  {h['by_rows']}  (clients used {r['client_cpu_seconds']:.1f} CPU s)",
                  flush=True)
        if raw and out["closed"]:
            top = max(out["closed"], key=lambda r: r["concurrency"])
            out["goal_90pct_of_raw"] = top["share_of_raw"] >= 0.9
            print(f"goal: serve at {top['concurrency']} clients >= 90% of the raw model rate: "
                  f"{'MET' if out['goal_90pct_of_raw'] else 'NOT MET'} ({top['share_of_raw']:.0%})")
        if a.soak:
            s = out["soak"] = soak(a, addr, bodies, server)
            print(f"soak {a.soak} min at {a.rate} req/s: {s['ok']} ok, errors {s['errors'] or 0}, achieved {s['achieved_rate']:.1f} req/s, "
                  f"p50 {s['latency_p50_ms']:.2f} ms, p99 {s['latency_p99_ms']:.2f} ms (from when each was due); RSS first "
                  f"{s['rss_first_mb']:.1f}, last {s['rss_last_mb']:.1f}, max {s['rss_max_mb']:.1f} MB: "
                  + ("flat" if s["rss_flat"] else "GROWING (last > first x 1.05)"))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            rc = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            rc = "did not stop within 60 s (killed)"
        out["exit_after_sigterm"] = rc
        print(f"SIGTERM: kd serve exited {rc}" + ("" if rc == 0 else f" -- NOT 0; log: {log.name}"))
        Path(a.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
