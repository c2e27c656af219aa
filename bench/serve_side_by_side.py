#!/usr/bin/env python3
"""serve_side_by_side.py -- kd's int8 (and f32, bf16) serving cost beside PyTorch and ONNX Runtime
running the same model, on the same rows, measured the same way; one table per run.

For each run folder (--runs):
  1. `kd export RUN --out TMP/export` (LoRA merged, head included: a transformers folder);
  2. --repeats rounds, the order flipping each round so neither side always runs first:
       kd:   `kd compare RUN --dtype f32 --int8 --json ...` (rows "RUN" and "RUN (int8)") and
             `kd compare RUN --dtype bf16 --json ...`;
       peer: `bench/serve_peer.py` on the export (PyTorch f32 / bf16 / dynamic int8, ORT f32 /
             int8 in every configuration; each family's fastest configuration that keeps accuracy);
  3. the table: accuracy, rows/s @32 (min-max over repeats), p50/p99 ms at batch 1 (means over
     repeats), mean tokens per row, peak RSS; the ratios kd / peer per round; the issue's goals
     (kd int8 >= 1.5x ORT int8 rows/s @32, kd int8 p50 below ORT int8's).
Both sides read the run's test split (its config.toml `data`, test.csv[.gz]); --rows N cuts it
to its first N rows (a temporary dataset both sides read) for quick checks. --threads N sets
RAYON_NUM_THREADS for kd and the peer's torch/ORT thread counts; without it kd uses rayon's
default and the peer every CPU it may run on. kd's peak RSS is the whole `kd compare` process
(the --dtype model and its int8 copy both loaded), the peer's is each configuration's own.

Standard library only; the peer runs under --peer-python (default $PEER_PYTHON, else
../venv-peer/bin/python beside the repository; see serve_peer.py for its versions).

    # the measurement (idle machine, every core, all 1,600 test rows, both runs)
    python3 bench/serve_side_by_side.py --kd target/rel/release/kd --json /tmp/serve-sbs.json
    # a quick check (1 thread, 200 rows, one run, one round)
    python3 bench/serve_side_by_side.py --kd target/rel/release/kd --runs runs/repr_evidence/b0_0 \\
        --threads 1 --rows 200 --repeats 1
"""
import argparse, csv, gzip, itertools, json, os, shutil, subprocess, sys, tempfile, time, tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ["runs/repr_evidence/teacher", "runs/repr_evidence/b0_0"]
# table rows: (label, side, key): kd keys are compare entries, peer keys are families
BACKENDS = [("kd f32", "kd", "f32"), ("kd bf16", "kd", "bf16"), ("kd int8", "kd", "int8"),
            ("PyTorch f32", "peer", "torch-f32"), ("PyTorch bf16", "peer", "torch-bf16"),
            ("PyTorch int8 (dynamic)", "peer", "torch-int8"), ("ORT f32", "peer", "ort-f32"),
            ("ORT int8 (dynamic)", "peer", "ort-int8")]
PAIRS = [("kd int8", "ORT int8 (dynamic)"), ("kd int8", "PyTorch int8 (dynamic)"),
         ("kd f32", "PyTorch f32"), ("kd f32", "ORT f32"), ("kd bf16", "PyTorch bf16")]


def default_peer_python():
    venv = ROOT.parent / "venv-peer/bin/python"
    return os.environ.get("PEER_PYTHON") or (str(venv) if venv.exists() else sys.executable)


def run_cmd(cmd, env=None, log=None):
    """Runs cmd from the repository root; returns its output and its own peak RSS (MB)."""
    t0 = time.time()
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if log:
        Path(log).write_text(out)
    if p.returncode:
        sys.exit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}\n{out[-4000:]}")
    print(f"    {' '.join(map(str, cmd))[:150]}  ({time.time() - t0:.0f} s)", flush=True)
    return out, usage.ru_maxrss / 1024


def cpu_line():
    model, flags = "?", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    has = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("amx_int8", "avx512_vnni", "amx_bf16", "avx512_bf16"))
    return f"{model} ({len(os.sched_getaffinity(0))} CPUs here; {has})"


def git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def test_file(run):
    """The run's test split as kd resolves it for a CSV dataset, and its max-len."""
    cfg = tomllib.loads((ROOT / run / "config.toml").read_text())
    data = ROOT / cfg["data"]
    for name in ("test.csv.gz", "test.csv"):
        if (data / name).is_file():
            return data / name, cfg.get("train", {}).get("max_len", 128)
    sys.exit(f"{run}: no test.csv(.gz) in {data} (the peer reads CSV only)")


def kd_side(a, run, data_dir, tmp, rnd, env):
    """Both `kd compare` calls of one round: {f32, int8, bf16: entry}, the processes' peak RSS."""
    got, rss = {}, {}
    for dtype, extra in (("f32", ["--int8"]), ("bf16", [])):
        js = tmp / f"kd_{dtype}_{rnd}.json"
        cmd = [a.kd, "compare", run, "--dtype", dtype, *extra, "--json", js] + (["--data", data_dir] if data_dir else [])
        _, rss[dtype] = run_cmd(cmd, env, log=tmp / f"kd_{dtype}_{rnd}.log")
        for e in json.loads(js.read_text())["runs"]:
            key = "int8" if e["run"].endswith(" (int8)") else dtype
            t = e["serving"]["timing"]
            got[key] = dict(accuracy=e["accuracy"], mean_tokens=e["serving"]["mean_tokens"], rows_per_s=t["rows_per_s"],
                            latency_p50_ms=t["latency_p50_ms"], latency_p99_ms=t["latency_p99_ms"], threads=t.get("threads"),
                            config=f"kd compare --dtype {dtype}" + (" --int8" if key == "int8" else ""),
                            kernels=t["kernels"], peak_rss_mb=None, kd_compare_process_rss_mb=rss[dtype], dtype=t["dtype"])
    return got


def peer_side(a, export, test, max_len, tmp, rnd, env):
    """One run of the peer: {family: its best configuration's result}, and the whole output."""
    js = tmp / f"peer_{rnd}.json"
    cmd = [a.peer_python, ROOT / "bench/serve_peer.py", "--model", export, "--data", test, "--max-len", str(max_len),
           "--work", tmp / "onnx", "--json", js, "--acc-tol", str(a.acc_tol)]
    cmd += (["--threads", str(a.threads)] if a.threads else []) + (["--configs", a.peer_configs] if a.peer_configs else [])
    run_cmd(cmd, env, log=tmp / f"peer_{rnd}.log")
    out = json.loads(js.read_text())
    by_cfg = {r["config"]: r for r in out["results"]}
    return {fam: by_cfg[cfg] for fam, cfg in out["best"].items()}, out


def span(values, fmt="{:.1f}"):
    lo, hi = min(values), max(values)
    return fmt.format(lo) if len(values) == 1 else f"{fmt.format(lo)}-{fmt.format(hi)}"


def report(run, rounds, peers):
    """Prints the run's table and returns its summary."""
    rows = {}
    for label, side, key in BACKENDS:
        per = [r[side][key] for r in rounds if key in r[side]]
        if per:
            rows[label] = per
    print(f"\n== {run}")
    print(f"{'backend':24s} {'config':44s} {'acc %':>6s} {'rows/s@32':>15s} {'p50 ms':>7s} {'p99 ms':>7s} {'tokens':>7s} {'RSS MB':>7s}")
    summary = {}
    for label, per in rows.items():
        mean = lambda k: sum(p[k] for p in per) / len(per)  # noqa: E731
        configs = "/".join(sorted({p["config"] for p in per}))
        rss = [p["peak_rss_mb"] for p in per if p.get("peak_rss_mb")]
        summary[label] = dict(configs=configs, accuracy=mean("accuracy"), rows_per_s=[p["rows_per_s"] for p in per],
                              latency_p50_ms=mean("latency_p50_ms"), latency_p99_ms=mean("latency_p99_ms"),
                              mean_tokens=per[0]["mean_tokens"], peak_rss_mb=max(rss) if rss else None)
        s = summary[label]
        rss = "-" if s["peak_rss_mb"] is None else f"{s['peak_rss_mb']:.0f}"
        print(f"{label:24s} {configs[:44]:44s} {s['accuracy'] * 100:6.2f} {span(s['rows_per_s']):>15s} "
              f"{s['latency_p50_ms']:7.2f} {s['latency_p99_ms']:7.2f} {s['mean_tokens']:7.2f} {rss:>7s}")
    threads = sorted({str(r["kd"][k]["threads"]) for r in rounds for k in r["kd"]})
    print(f"threads: kd {'/'.join(threads)} (its JSON), peer {peers[0]['threads']}")
    for label, key in (("kd f32", "f32"), ("kd bf16", "bf16"), ("kd int8", "int8")):
        if key in rounds[0]["kd"]:
            print(f"{label} kernels: {rounds[0]['kd'][key]['kernels']}")
    kd_rss = {k: round(rounds[0]["kd"][k]["kd_compare_process_rss_mb"]) for k in ("f32", "bf16") if k in rounds[0]["kd"]}
    print(f"p50/p99: means over rounds. RSS: each peer configuration's own process (PyPI's CUDA torch holds ~750 MB "
          f"once imported); kd's whole `kd compare` process, not in the table: --dtype f32 --int8 (two models) "
          f"{kd_rss.get('f32')} MB, --dtype bf16 {kd_rss.get('bf16')} MB")
    ratios = {}
    for a_label, b_label in PAIRS:
        if a_label in rows and b_label in rows:
            n = min(len(rows[a_label]), len(rows[b_label]))
            thr = [rows[a_label][i]["rows_per_s"] / rows[b_label][i]["rows_per_s"] for i in range(n)]
            p50 = [rows[b_label][i]["latency_p50_ms"] / rows[a_label][i]["latency_p50_ms"] for i in range(n)]
            ratios[f"{a_label} / {b_label}"] = dict(rows_per_s=thr, p50_speedup=p50)
            print(f"{a_label} / {b_label}: rows/s@32 x{span(thr, '{:.2f}')}, p50 {b_label}/{a_label} x{span(p50, '{:.2f}')}")
    goals = {}
    r = ratios.get("kd int8 / ORT int8 (dynamic)")
    if r:
        goals = dict(int8_throughput_ge_1_5x=min(r["rows_per_s"]) >= 1.5, int8_p50_lower=min(r["p50_speedup"]) > 1)
        print(f"goal kd int8 >= 1.5x ORT int8 rows/s@32 in every round: {'MET' if goals['int8_throughput_ge_1_5x'] else 'NOT MET'}; "
              f"kd int8 p50 below ORT int8's in every round: {'MET' if goals['int8_p50_lower'] else 'NOT MET'}")
    print("every peer configuration, round by round (rows/s@32, p50 ms, accuracy %):")
    for cfg in [r["config"] for r in peers[0]["results"]]:
        got = [next((r for r in p["results"] if r["config"] == cfg), None) for p in peers]
        print(f"  {cfg:28s} " + "   ".join(f"{r['rows_per_s']:8.1f} {r['latency_p50_ms']:6.2f} {r['accuracy'] * 100:6.2f}"
                                           if r else "   (failed)" for r in got))
    peer_tokens = peers[0]["mean_tokens"]
    kd_tokens = rounds[0]["kd"]["f32"]["mean_tokens"]
    drift = abs(kd_tokens - peer_tokens) / kd_tokens
    print(f"mean tokens per row: kd {kd_tokens:.3f}, peer {peer_tokens:.3f}: "
          + ("agree within 1%" if drift <= 0.01 else f"DIFFER by {drift:.1%}: the sides do not run the same inputs"))
    return dict(table=summary, ratios=ratios, goals=goals, mean_tokens=dict(kd=kd_tokens, peer=peer_tokens,
                                                                             within_1_percent=drift <= 0.01))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kd", default=str(ROOT / "target/release/kd"), help="the kd binary")
    ap.add_argument("--runs", nargs="+", default=RUNS, help="run folders, relative to the repository root")
    ap.add_argument("--threads", type=int, default=0, help="RAYON_NUM_THREADS for kd, --threads for the peer")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rows", type=int, default=0, help="only the first N test rows (0: all), for quick checks")
    ap.add_argument("--peer-python", default=default_peer_python())
    ap.add_argument("--peer-configs", default="", help="passed to serve_peer.py --configs (default: all)")
    ap.add_argument("--acc-tol", type=float, default=0.5, help="accuracy points a peer config may lose vs PyTorch f32")
    ap.add_argument("--json", default="serve-side-by-side.json")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (exports, ONNX, logs)")
    a = ap.parse_args()
    a.kd = str(Path(a.kd).resolve())
    env = dict(os.environ)
    if a.threads:
        env["RAYON_NUM_THREADS"] = str(a.threads)
    meta = dict(cpu=cpu_line(), threads=a.threads or "default (kd: rayon's; peer: every CPU)",
                kd_commit=git("rev-parse", "--short", "HEAD"), kd_tree_dirty=bool(git("status", "--porcelain", "--", "src")),
                kd_binary=a.kd, kd_binary_built=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(a.kd))),
                repeats=a.repeats, rows=a.rows or "all", started=time.strftime("%Y-%m-%d %H:%M:%S"))
    print("\n".join(f"{k}: {v}" for k, v in meta.items()), flush=True)
    results = dict(meta=meta, runs={})
    for run in a.runs:
        tmp = Path(tempfile.mkdtemp(prefix="kd-serve-sbs-"))
        test, max_len = test_file(run)
        data_dir = None
        if a.rows:  # a dataset of the first N rows, read by both sides
            data_dir = tmp / "data"
            data_dir.mkdir()
            opener = gzip.open if test.suffix == ".gz" else open
            with opener(test, "rt", encoding="utf-8", newline="") as f:
                head = list(itertools.islice((r for r in csv.reader(f) if r), a.rows))
            with gzip.open(data_dir / "test.csv.gz", "wt", encoding="utf-8", newline="") as f:
                csv.writer(f, quoting=csv.QUOTE_ALL).writerows(head)
            test = data_dir / "test.csv.gz"
        export = tmp / "export"
        print(f"\n{run}: test rows from {test}")
        run_cmd([a.kd, "export", run, "--out", export], env)
        rounds, peers = [], []
        for rnd in range(a.repeats):
            sides = {}
            for side in (("kd", "peer") if rnd % 2 == 0 else ("peer", "kd")):
                if side == "kd":
                    sides["kd"] = kd_side(a, run, data_dir, tmp, rnd, env)
                else:
                    sides["peer"], full = peer_side(a, export, test, max_len, tmp, rnd, env)
                    peers.append(full)
            rounds.append(sides)
        summary = report(run, rounds, peers)
        results["runs"][run] = dict(summary=summary, rounds=rounds, peer_runs=peers, tmp=str(tmp) if a.keep else None)
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    Path(a.json).write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
