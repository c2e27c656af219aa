#!/usr/bin/env python3
"""side_by_side.py -- kd and PyTorch + PEFT measured in one run, on the same machine, same texts.

Runs `kd bench` and the PyTorch peer one after the other (alternating, --repeats times) and prints
each one's training samples/s (and, where both measure it, caching samples/s and peak memory),
then the kd/PyTorch ratios. Every run's JSON goes to --json.

  CPU, the real encoders on the real-data split (the issue's reference: ~16 and ~31 samples/s):
    .venv/bin/python bench/side_by_side.py cpu --kd target/release/kd
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


def result_of(cmd, env=None):
    t0 = time.time()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}")
    line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")][-1]
    r = json.loads(line[len("RESULT "):])
    r["wall"] = time.time() - t0
    return r


def ratio(a, b):
    return None if not a or not b else a / b


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["cpu", "gpu"])
    ap.add_argument("--kd", default="target/release/kd")
    ap.add_argument("--steps", type=int, default=40, help="timed training steps per run")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    kd = args.kd.split(",")
    runs = []
    if args.mode == "cpu":
        split = SHARED / "data/ag_news/split"
        for name, folder, r, alpha in CPU_MODELS:
            model = SHARED / folder
            for rep in range(args.repeats):
                k = result_of(kd + ["bench", "--model", str(model), "--data", str(split / "train.csv.gz"),
                                    "--steps", str(args.steps), "--warmup-steps", "3", "--cache-rows", "512",
                                    "--lora-r", str(r), "--lora-alpha", str(alpha), "--device", "cpu"])
                p = result_of([PY, "bench/peer_train.py", "--model", str(model), "--data", str(split),
                               "--max-steps", str(args.steps + 3), "--limit-test", "512", "--attn", "sdpa",
                               "--lora-r", str(r), "--lora-alpha", str(alpha)])
                runs.append({"model": name, "repeat": rep, "kd": k, "peer": p,
                             "train_ratio": ratio(k["train_samples_per_s"], p["train_samples_per_s"]),
                             "infer_ratio": ratio(k["cache_samples_per_s"], p.get("eval_samples_per_s"))})
    else:
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
