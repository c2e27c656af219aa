#!/usr/bin/env python3
"""side_by_side.py -- kd bench and PyTorch + PEFT at its best (bench/peer_hf.py), on the same
machine, the same rows, batch size and max-len, run alternately.

For each model, --repeats rounds of `kd bench` and `bench/peer_hf.py` (the order flips every
round, so neither side always runs first), then one table: both sides' training and caching
samples/s and tokens/s, real and padded tokens, peak memory, dtype, and the kd/PyTorch ratios.
It warns when the two sides' padded tokens differ by more than 5% and says why. Every run's JSON
goes to --json.

  CPU (default): all-MiniLM-L6-v2 (LoRA r 8/alpha 32), paraphrase-MiniLM-L3-v2 (r 4/alpha 16) and
  the roberta-base shape (random weights, real tokenizer; r 8/alpha 32) on the AG News split's
  6,000 training rows, batch 32, max-len 128, one epoch of timed steps (185) after 3 untimed,
  caching 1,600 rows in batches of 64; kd with --dtype auto, the peer with --dtype auto --compile
  auto (fastest of f32, bf16 autocast, bf16 weights + autocast, then with torch.compile, probed on
  this machine by the model's first PyTorch run):
    python3 bench/side_by_side.py cpu --kd target/release/kd --json /tmp/sbs.json
  The issue's protocol (30 steps): add --steps 30. Both sides then draw different random
  batches, so their padded tokens differ by over 5% in about half the runs; tokens/s is the
  fairer figure there, and the table warns.
  GPU, roberta-base shape, bf16 (both sides):
    python3 bench/side_by_side.py gpu --kd target/cuda-dist/gpu-run.sh,target/cuda-dist/kd

--kd is the kd command, comma-separated when it has several words. The peer runs under
--peer-python (default: $PEER_PYTHON, else ../venv-peer/bin/python beside the repository, else
this interpreter); this script itself needs only the standard library.
"""
import argparse
import csv
import gzip
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED", ROOT.parent / "shared"))

# name -> (kd/peer model flags, lora r, lora alpha)
MODELS = {
    "L6": ("all-MiniLM-L6-v2", lambda: ["--model", str(SHARED / "models/all-MiniLM-L6-v2")], 8, 32),
    "L3": ("paraphrase-MiniLM-L3-v2", lambda: ["--model", str(SHARED / "models/paraphrase-MiniLM-L3-v2")], 4, 16),
    "roberta-base": ("roberta-base shape", lambda: ["--shape", "roberta-base", "--tokenizer",
                                                    str(SHARED / "models/roberta-base-tokenizer")], 8, 32),
}
MODES = {  # defaults per mode
    "cpu": dict(device="cpu", models="L6,L3,roberta-base", data=SHARED / "data/ag_news/split/train.csv.gz",
                steps="epoch", warmup_steps=3, cache_rows=1600, cache_batch_size=64, kd_dtype="auto",
                peer_dtype="auto", peer_compile="auto"),
    "gpu": dict(device="cuda", models="roberta-base", data=SHARED / "data/ag_news/test.csv.gz",
                steps="50", warmup_steps=5, cache_rows=7600, cache_batch_size=128, kd_dtype="bf16",
                peer_dtype="bf16", peer_compile="off"),
}
PAD_TOLERANCE = 0.05


def default_peer_python():
    if os.environ.get("PEER_PYTHON"):
        return os.environ["PEER_PYTHON"]
    venv = ROOT.parent / "venv-peer/bin/python"
    return str(venv) if venv.exists() else sys.executable


def count_rows(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return sum(1 for row in csv.reader(f) if row)


SHOWN = ("probing ", "  probe ", "  (--cache", "training: dtype")  # the peer's dtype/compile probe


def result_of(cmd, env=None):
    """Runs cmd from the repository root and returns its last `RESULT {json}` line, parsed. The
    peer's probe lines are echoed as they come (a probe with compile takes minutes)."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith(SHOWN):
            print("    " + line.rstrip(), flush=True)
    rc = proc.wait()
    lines = [ln for ln in out if ln.startswith("RESULT ")]
    if rc != 0 or not lines:
        sys.stderr.write("".join(out)[-6000:])
        raise SystemExit(f"failed (exit {rc}): {' '.join(map(str, cmd))}")
    r = json.loads(lines[-1][len("RESULT "):])
    r["wall"] = time.time() - t0
    return r


def commands(args, key, steps):
    """(kd command, peer command) for one model."""
    _, model_flags, r, alpha = MODELS[key]
    common = model_flags() + [
        "--data", str(args.data), "--batch-size", str(args.batch_size), "--max-len", str(args.max_len),
        "--warmup-steps", str(args.warmup_steps), "--steps", str(steps), "--cache-rows", str(args.cache_rows),
        "--cache-batch-size", str(args.cache_batch_size), "--lora-r", str(r), "--lora-alpha", str(alpha),
        "--device", args.device]
    kd = args.kd.split(",") + ["bench"] + common + ["--dtype", args.kd_dtype]
    peer = [args.peer_python, str(ROOT / "bench/peer_hf.py")] + common + args.peer_arg
    return kd, peer


def peer_choice(args, first):
    """The peer's --dtype/--compile flags: what the user asked for (auto: probe) on a model's first
    PyTorch run; afterwards, unless --reprobe, what that run chose (so the probe runs once a model)."""
    if first is None or args.reprobe:
        return ["--dtype", args.peer_dtype, "--compile", args.peer_compile]
    on = lambda b: "on" if b else "off"  # noqa: E731
    return ["--dtype", first["train_dtype"], "--compile", on(first["compile"]),
            "--cache-dtype", first["cache_dtype"], "--cache-compile", on(first["cache_compile"])]


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def ratio(a, b):
    return a / b if a and b else None


def fmt_range(xs, spec="{:.1f}"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    lo, hi = min(xs), max(xs)
    return spec.format(lo) if lo == hi else f"{spec.format(lo)}-{spec.format(hi)}"


def padding_check(name, kd_runs, peer_runs):
    """Warnings (with the reason) where the sides' padded tokens differ by more than 5%."""
    notes = []
    for phase in ("train", "cache"):
        kp, pp = mean([r[f"{phase}_padded_tokens"] for r in kd_runs]), mean([r[f"{phase}_padded_tokens"] for r in peer_runs])
        kr, pr = mean([r[f"{phase}_tokens"] for r in kd_runs]), mean([r[f"{phase}_tokens"] for r in peer_runs])
        if not kp or not pp or abs(kp - pp) / min(kp, pp) <= PAD_TOLERANCE:
            continue
        why = []
        real_diff = (pr - kr) / kr
        k_over, p_over = kp / kr - 1, pp / pr - 1
        if phase == "train":
            if abs(real_diff) > 0.01:
                why.append(f"the sides trained on different rows: real tokens differ by {100 * real_diff:+.1f}% "
                           f"(kd {kr:,.0f}, PyTorch {pr:,.0f}). Each shuffles with its own generator (kd's "
                           f"StdRng, torch's) and a short run takes a few of the epoch's length-grouped "
                           f"batches, whose lengths vary widely; tokens/s is the fairer figure, and "
                           f"--steps epoch makes both sides cover the same rows")
            if abs(p_over - k_over) > 0.02:
                why.append(f"the grouping pads differently: kd pads {100 * k_over:.1f}% over its real tokens, "
                           f"PyTorch {100 * p_over:.1f}% (kd sorts buckets of 50 batches; HF's "
                           f"LengthGroupedSampler used mega-batches of "
                           f"{peer_runs[0].get('mega_batch_mult', '?')} batches)")
        else:
            if kr != pr:
                why.append(f"the two tokenisations differ: the same {kd_runs[0]['cache_rows']} rows hold "
                           f"{kr:,.0f} real tokens in kd and {pr:,.0f} in PyTorch (tokenizer folder, max-len?)")
            else:
                why.append("the same rows were cut into different batches (cache batch size or sort order)")
        if not why:
            why.append("both the rows and the padding differ slightly; see the real and padded tokens above")
        notes.append(f"WARNING {name} {phase}: padded tokens differ by {100 * (pp - kp) / kp:+.1f}% "
                     f"(kd {kp:,.0f}, PyTorch {pp:,.0f}): " + "; ".join(why) + ".")
    return notes


def table(key, runs, sides):
    name = MODELS[key][0]
    by = {s: [r["result"] for r in runs if r["model"] == key and r["side"] == s] for s in sides}
    print(f"\n{name}  (samples/s and tokens/s: min-max over {len(by[sides[0]])} runs; tokens: real/padded, mean)")
    hdr = (f"  {'side':<8} {'train samples/s':>16} {'train tokens/s':>15} {'train tokens':>17} "
           f"{'cache samples/s':>16} {'cache tokens/s':>15} {'cache tokens':>17} {'peak MiB':>9}  dtype")
    print(hdr)
    for s in sides:
        rs = by[s]
        dt = sorted({str(r.get("dtype")) + (" +compile" if r.get("compile") else "") for r in rs})
        print(f"  {s:<8} {fmt_range([r['train_samples_per_s'] for r in rs]):>16} "
              f"{fmt_range([r['train_tokens_per_s'] for r in rs], '{:.0f}'):>15} "
              f"{mean([r['train_tokens'] for r in rs]):>8,.0f}/{mean([r['train_padded_tokens'] for r in rs]):<8,.0f} "
              f"{fmt_range([r['cache_samples_per_s'] for r in rs]):>16} "
              f"{fmt_range([r['cache_tokens_per_s'] for r in rs], '{:.0f}'):>15} "
              f"{mean([r['cache_tokens'] for r in rs]):>8,.0f}/{mean([r['cache_padded_tokens'] for r in rs]):<8,.0f} "
              f"{(max((r.get('peak_mem_bytes') or 0) for r in rs)) / 2**20:>9.0f}  {', '.join(dt)}")
    summary = {"model": name}
    if len(sides) == 2:
        k, p = by["kd"], by["pytorch"]
        cols = [("train samples/s", "train_samples_per_s"), ("train tokens/s", "train_tokens_per_s"),
                ("cache samples/s", "cache_samples_per_s"), ("cache tokens/s", "cache_tokens_per_s")]
        parts = []
        for label, f in cols:
            x = ratio(mean([r[f] for r in k]), mean([r[f] for r in p]))
            summary[f + "_ratio"] = x
            parts.append(f"{label} {x:.2f}x" if x else f"{label} -")
        mem = ratio(max((r.get("peak_mem_bytes") or 0) for r in k), max((r.get("peak_mem_bytes") or 0) for r in p))
        summary["peak_mem_ratio"] = mem
        parts.append(f"peak memory {mem:.2f}x" if mem else "peak memory -")
        print("  kd / PyTorch (means): " + ", ".join(parts))
        notes = padding_check(name, k, p)
        for kk, pp in zip(k, p):
            for f in ("batch_size", "max_len", "cache_rows", "steps"):
                if kk.get(f) != pp.get(f):
                    notes.append(f"WARNING {name}: {f} differs (kd {kk.get(f)}, PyTorch {pp.get(f)}).")
        for note in dict.fromkeys(notes):
            print("  " + note)
        summary["warnings"] = list(dict.fromkeys(notes))
    p0 = by.get("pytorch", [None])[0] if "pytorch" in by else None
    if p0:
        print(f"  PyTorch: torch {p0.get('torch')}, transformers {p0.get('transformers')}, peft {p0.get('peft')}; "
              f"{p0.get('grouping')} (mega-batches of {p0.get('mega_batch_mult')}), batch order "
              f"{p0.get('batch_order')}; attn {p0.get('attn')}; threads {p0.get('threads')}")
    k0 = by.get("kd", [None])[0] if "kd" in by else None
    print(f"  CPU: {(k0 or p0 or {}).get('cpu')}")
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", choices=sorted(MODES), default="cpu")
    ap.add_argument("--kd", default="target/release/kd", help="kd command (comma-separated words)")
    ap.add_argument("--peer-python", default=default_peer_python(), help="python with torch/transformers/peft")
    ap.add_argument("--models", default=None, help=f"comma-separated, of {','.join(MODELS)} (default per mode)")
    ap.add_argument("--data", default=None, help="AG News CSV(.gz) for both sides (default per mode)")
    ap.add_argument("--steps", default=None,
                    help="timed training steps, or 'epoch' (one epoch's batches less the warm-up ones: both "
                         "sides then cover nearly the same rows)")
    ap.add_argument("--warmup-steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--cache-rows", type=int, default=None)
    ap.add_argument("--cache-batch-size", type=int, default=None)
    ap.add_argument("--kd-dtype", default=None, help="kd bench --dtype (cpu default auto)")
    ap.add_argument("--peer-dtype", default=None, help="peer_hf.py --dtype (cpu default auto)")
    ap.add_argument("--peer-compile", default=None, choices=["off", "on", "auto"],
                    help="peer_hf.py --compile (cpu default auto: torch.compile counts when it is faster)")
    ap.add_argument("--reprobe", action="store_true",
                    help="let every PyTorch run probe dtype/compile (default: a model's first run probes, "
                         "the others reuse its choice)")
    ap.add_argument("--peer-arg", action="append", default=[], help="one more argument for peer_hf.py (repeatable)")
    ap.add_argument("--peer-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment for the peer only (repeatable), e.g. LD_PRELOAD=/usr/lib/x86_64-linux-gnu/"
                         "libjemalloc.so.2")
    ap.add_argument("--sides", default="kd,pytorch", help="kd,pytorch or just one of them")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None, help="write every run's full record here")
    args = ap.parse_args()
    for k, v in MODES[args.mode].items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not sides or any(s not in ("kd", "pytorch") for s in sides):
        raise SystemExit("--sides: kd, pytorch or both")
    keys = [m.strip() for m in args.models.split(",") if m.strip()]
    for k in keys:
        if k not in MODELS:
            raise SystemExit(f"--models: unknown {k!r}; expected some of {','.join(MODELS)}")
    if "kd" in sides:
        exe = Path(args.kd.split(",")[0])
        if not (ROOT / exe).exists() and not exe.exists():
            raise SystemExit(f"kd not found at {exe}: cargo build --release, pass --kd, or --sides pytorch")
    if args.steps == "epoch":
        n = count_rows(args.data)
        steps = max(1, math.ceil(max(n, args.batch_size) / args.batch_size) - args.warmup_steps)
        print(f"--steps epoch: {n} rows -> {steps} timed steps after {args.warmup_steps} untimed")
    else:
        steps = int(args.steps)
    print(f"{args.mode}: models {','.join(keys)}; data {args.data}; batch {args.batch_size}, max-len {args.max_len}, "
          f"{steps} steps (+{args.warmup_steps}), cache {args.cache_rows} rows in batches of {args.cache_batch_size}; "
          f"kd --dtype {args.kd_dtype}; PyTorch --dtype {args.peer_dtype} --compile {args.peer_compile} "
          f"({args.peer_python})", flush=True)

    peer_env = None
    if args.peer_env:
        peer_env = dict(os.environ)
        for kv in args.peer_env:
            k, _, v = kv.partition("=")
            peer_env[k] = v
    runs = []
    for key in keys:
        kd_cmd, peer_cmd = commands(args, key, steps)
        first_peer = None
        for rep in range(args.repeats):
            order = sides if rep % 2 == 0 else sides[::-1]
            for side in order:
                r = (result_of(kd_cmd) if side == "kd"
                     else result_of(peer_cmd + peer_choice(args, first_peer), peer_env))
                if side == "pytorch" and first_peer is None:
                    first_peer = r
                    if r.get("dtype_probe"):
                        print(f"{MODELS[key][0]:<24} PyTorch probe (samples/s): " + ", ".join(
                            f"{k} train {v['train_samples_per_s']:.1f} cache {v['cache_samples_per_s']:.1f}"
                            for k, v in r["dtype_probe"].items()), flush=True)
                runs.append({"model": key, "repeat": rep, "side": side, "result": r})
                print(f"{MODELS[key][0]:<24} rep {rep} {side:<8} train {r['train_samples_per_s']:7.1f}/s "
                      f"({r['train_tokens']}/{r['train_padded_tokens']} tokens)  cache "
                      f"{r['cache_samples_per_s']:7.1f}/s ({r['cache_tokens']}/{r['cache_padded_tokens']})  "
                      f"peak {(r.get('peak_mem_bytes') or 0) / 2**20:6.0f} MiB  dtype {r.get('dtype')}"
                      + (" +compile" if r.get("compile") else ""), flush=True)
    summaries = [table(key, runs, sides) for key in keys]
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                               "steps": steps, "runs": runs, "summary": summaries}, indent=2))
    print("RESULT " + json.dumps(summaries))


if __name__ == "__main__":
    main()
