#!/usr/bin/env python3
"""side_by_side.py -- kd and PyTorch + PEFT measured in one run, on the same machine, same texts.

Runs `kd bench` and the PyTorch peer one after the other (alternating, --repeats times) and prints
each one's training samples/s (and, where both measure it, caching samples/s and peak memory),
then the kd/PyTorch ratios. Every run's JSON goes to --json.

  CPU, the real encoders on the real-data split: kd f32, kd bf16, PyTorch f32 and PyTorch bf16
  autocast (--configs picks some), alternating, each one's peak resident memory (/usr/bin/time):
    .venv/bin/python bench/side_by_side.py cpu --kd target/release/kd --repeats 2
  GPU, roberta-base shape with random weights (bench/peer_hf.py; bf16):
    python3 bench/side_by_side.py gpu --kd target/cuda-dist/gpu-run.sh,target/cuda-dist/kd

--kd is the kd command, comma-separated when it has several words.
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED", ROOT.parent / "shared"))
PY = sys.executable

CPU_MODELS = [  # (name, folder, lora r, lora alpha)
    ("all-MiniLM-L6-v2", "models/all-MiniLM-L6-v2", 8, 32),
    ("paraphrase-MiniLM-L3-v2", "models/paraphrase-MiniLM-L3-v2", 4, 16),
]


CPU_CONFIGS = ["kd-f32", "kd-bf16", "torch-f32", "torch-bf16"]
TIME = "/usr/bin/time"


def result_of(cmd, env=None, measure_rss=False):
    """Runs cmd and returns its RESULT json plus its wall time (and, with measure_rss, the
    process's peak resident memory from /usr/bin/time, in bytes)."""
    t0 = time.time()
    if measure_rss:
        if not os.path.exists(TIME):
            raise SystemExit(f"{TIME} is needed to measure peak memory (apt-get install time)")
        cmd = [TIME, "-f", "KD_MAX_RSS_KB %M"] + list(cmd)
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}")
    line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")][-1]
    r = json.loads(line[len("RESULT "):])
    r["wall"] = time.time() - t0
    if measure_rss:
        kb = [l for l in out.stderr.splitlines() if l.startswith("KD_MAX_RSS_KB ")][-1]
        r["max_rss_bytes"] = int(kb.split()[1]) * 1024
    return r


def cpu_run(config, kd, model, split, steps, r, alpha, infer_rows):
    """One CPU configuration: (train samples/s, infer samples/s, peak RSS bytes, full json)."""
    who, dtype = config.split("-")
    if who == "kd":
        j = result_of(kd + ["bench", "--model", str(model), "--data", str(split / "train.csv.gz"),
                            "--steps", str(steps), "--warmup-steps", "3", "--cache-rows", str(infer_rows),
                            "--lora-r", str(r), "--lora-alpha", str(alpha), "--device", "cpu",
                            "--dtype", dtype], measure_rss=True)
        return j["train_samples_per_s"], j["cache_samples_per_s"], j["max_rss_bytes"], j
    j = result_of([PY, "bench/peer_train.py", "--model", str(model), "--data", str(split),
                   "--max-steps", str(steps + 3), "--limit-test", str(infer_rows), "--attn", "sdpa",
                   "--lora-r", str(r), "--lora-alpha", str(alpha), "--dtype", dtype], measure_rss=True)
    return j["train_samples_per_s"], j.get("eval_samples_per_s"), j["max_rss_bytes"], j


def cpu_mode(args, kd):
    configs = args.configs.split(",")
    for c in configs:
        if c not in CPU_CONFIGS:
            raise SystemExit(f"--configs: unknown {c!r}; expected some of {','.join(CPU_CONFIGS)}")
    split = SHARED / "data/ag_news/split"
    runs = []
    for name, folder, r, alpha in CPU_MODELS:
        for rep in range(args.repeats):
            # Rotate the order each repeat so that no configuration always runs first (or last).
            order = configs[rep % len(configs):] + configs[:rep % len(configs)]
            for c in order:
                train, infer, rss, j = cpu_run(c, kd, SHARED / folder, split, args.steps, r, alpha,
                                               args.infer_rows)
                runs.append({"model": name, "repeat": rep, "config": c, "train_samples_per_s": train,
                             "infer_samples_per_s": infer, "max_rss_bytes": rss, "result": j})
                print(f"{name:<26} rep {rep} {c:<11} train {train:7.1f}/s  infer {infer or 0:7.1f}/s  "
                      f"peak RSS {rss / 2**20:7.0f} MiB", flush=True)
    print()
    print(f"{'model':<26} {'config':<11} {'train/s (min-max)':>20} {'infer/s (min-max)':>20} {'peak RSS MiB':>13}")
    for name, *_ in CPU_MODELS:
        best = {}
        for c in configs:
            rows = [x for x in runs if x["model"] == name and x["config"] == c]
            tr = [x["train_samples_per_s"] for x in rows]
            inf = [x["infer_samples_per_s"] or 0 for x in rows]
            rss = max(x["max_rss_bytes"] for x in rows)
            best[c] = (sum(tr) / len(tr), sum(inf) / len(inf))
            print(f"{name:<26} {c:<11} {min(tr):9.1f}-{max(tr):<9.1f} {min(inf):9.1f}-{max(inf):<9.1f} "
                  f"{rss / 2**20:13.0f}")
        kd_best = [best[c] for c in configs if c.startswith("kd")]
        torch_best = [best[c] for c in configs if c.startswith("torch")]
        if kd_best and torch_best:
            for i, what in enumerate(["train", "infer"]):
                k, t = max(x[i] for x in kd_best), max(x[i] for x in torch_best)
                print(f"  {what}: kd's faster config / PyTorch's faster config (means): {ratio(k, t):.2f}x")
    return runs


def ratio(a, b):
    return None if not a or not b else a / b


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["cpu", "gpu"])
    ap.add_argument("--kd", default="target/release/kd")
    ap.add_argument("--steps", type=int, default=40, help="timed training steps per run")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--configs", default=",".join(CPU_CONFIGS), help="cpu mode: which configurations")
    ap.add_argument("--infer-rows", type=int, default=512,
                    help="cpu mode: rows in kd's caching pass and the peer's evaluation (the test split has 1,600)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    kd = args.kd.split(",")
    runs = []
    if args.mode == "cpu":
        runs = cpu_mode(args, kd)
        if args.json:
            Path(args.json).write_text(json.dumps(runs, indent=2))
        print("RESULT " + json.dumps([{k: v for k, v in r.items() if k != "result"} for r in runs]))
        return
    data = SHARED / "data/ag_news/test.csv.gz"
    tok = SHARED / "models/roberta-base-tokenizer"
    for rep in range(args.repeats):
        k = result_of(kd + ["bench", "--shape", "roberta-base", "--tokenizer", str(tok), "--data", str(data),
                            "--steps", str(args.steps), "--warmup-steps", "5", "--cache-rows", "7600",
                            "--device", "cuda", "--dtype", "bf16"])
        p = result_of([PY, "bench/peer_hf.py", "--shape", "roberta-base", "--data", str(data),
                       "--steps", str(args.steps), "--warmup-steps", "5", "--device", "cuda", "--dtype", "bf16"])
        runs.append({"model": "roberta-base shape", "repeat": rep, "kd": k, "peer": p,
                     "train_ratio": ratio(k["train_samples_per_s"], p["train_samples_per_s"]),
                     "cache_ratio": ratio(k["cache_samples_per_s"], p["cache_samples_per_s"]),
                     # kd's meter counts what its allocator holds: compare with torch's reserved peak.
                     "memory_ratio": ratio(k.get("train_peak_mem_bytes"), p.get("train_peak_reserved_bytes"))})
    print(f"{'model':<26} {'kd train/s':>11} {'peer train/s':>13} {'ratio':>6} {'kd infer/s':>11} {'peer infer/s':>13} {'ratio':>6}")
    for r in runs:
        k, p = r["kd"], r["peer"]
        peer_inf = p.get("cache_samples_per_s", p.get("eval_samples_per_s"))
        inf_ratio = r.get("cache_ratio", r.get("infer_ratio")) or 0
        print(f"{r['model']:<26} {k['train_samples_per_s']:>11.1f} {p['train_samples_per_s']:>13.1f} "
              f"{r['train_ratio']:>6.2f} {k['cache_samples_per_s']:>11.1f} {peer_inf or 0:>13.1f} {inf_ratio:>6.2f}")
        if "memory_ratio" in r and r["memory_ratio"]:
            print(f"  peak memory kd/peer: {r['memory_ratio']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))
    print("RESULT " + json.dumps([{k: v for k, v in r.items() if k not in ("kd", "peer")} for r in runs]))


if __name__ == "__main__":
    main()
