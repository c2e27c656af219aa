"""serve_peer.py -- the serving peer of `kd compare`'s timing: PyTorch and ONNX Runtime running a
`kd export`ed model (LoRA merged, head included) on the same test rows, measured as kd measures.

Measured per backend configuration, each in a fresh child process (so its peak RSS is its own):
  * accuracy over every row (an untimed pass, which also warms the backend up, as kd times after
    evaluating);
  * rows/s @32: one untimed batch (the plan's middle one, as kd), then every row once in batches
    of 32 cut from the rows sorted by (tokens, index), each padded to its own longest row;
    padding and copying the logits out are inside the timer, tokenizing is not;
  * latency p50/p99 (nearest rank) at batch 1 over min(200, rows) rows i*rows//k, after the
    first 10 of them untimed, logits back as a numpy array;
  * peak RSS (VmHWM) of the child, and the ONNX files' sizes.
Rows are tokenized as kd tokenizes them: the folder's tokenizer.json, padding off, truncation to
--max-len, special tokens added, one text per row = title + " " + description (kd's AG News
reader), no token_type_ids (kd sends none for single texts; BERT then uses zeros).

Backends (--configs picks a subset; families are what the report compares):
  torch-f32        AutoModelForSequenceClassification, SDPA attention, torch.inference_mode
  torch-bf16       bf16 autocast over f32 weights | bf16w: bf16 weights under bf16 autocast
  torch-int8       torch.ao.quantization.quantize_dynamic(nn.Linear, qint8) (deprecated, still there)
  ort-f32          graph `dynamo`: torch.onnx.export(dynamo=True, SDPA), or `fused`: the TorchScript
                   exporter (dynamo=False, eager attention) + onnxruntime.transformers.optimizer
                   (EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu fused)
  ort-int8         quantize_dynamic of either graph x per_channel {0,1} x weights {QInt8,QUInt8}
                   (activations QUInt8, ORT's dynamic scheme)
Sessions: intra_op_num_threads=--threads, inter_op 1, sequential, ORT_ENABLE_ALL. Torch:
set_num_threads(--threads). Each family's "best" is its fastest configuration by rows/s @32
whose accuracy is within --acc-tol points of torch-f32's; every configuration is printed.

Written and run with (in ../venv-peer): Python 3.11.7, torch 2.15.0 (+cu132 wheel, run on the
CPU), transformers 5.24.0, tokenizers 0.23.3, numpy 2.4.6, onnxruntime 1.32.0, onnx 1.23.2,
onnxscript 0.7.2 (dynamo export), onnx-ir 1.1.0, protobuf 7.36.2, ml_dtypes 0.7.0.

    ../venv-peer/bin/python bench/serve_peer.py --model /tmp/export_b0 \\
        --data ../shared/data/ag_news/lowlabel/test.csv.gz --work /tmp/onnx_b0 --json /tmp/peer.json
    # quick: 200 rows, 1 thread, only two configurations
    ... --rows 200 --threads 1 --configs torch-f32,ort-int8:fused:pc1:QInt8
"""
import argparse, csv, gzip, json, math, os, subprocess, sys, time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
BATCH, LAT_ROWS, WARMUP = 32, 200, 10
INT8 = [f"ort-int8:{g}:pc{p}:{w}" for g in ("fused", "dynamo") for p in (1, 0) for w in ("QInt8", "QUInt8")]
CONFIGS = ["torch-f32", "torch-bf16:autocast", "torch-bf16:bf16w", "torch-int8:dynamic",
           "ort-f32:fused", "ort-f32:dynamo"] + INT8


def read_rows(path, limit):
    """kd's AG News reader: no header, "class","title","description"; text = title + " " + description."""
    opener = gzip.open if path.endswith(".gz") else open
    texts, labels = [], []
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.reader(f):
            if row:
                texts.append(row[1] + " " + row[2]); labels.append(int(row[0]) - 1)
            if limit and len(texts) >= limit:
                break
    return texts, labels


def tokenize(model_dir, texts, max_len):
    from tokenizers import Tokenizer
    tk = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tk.no_padding()
    tk.enable_truncation(max_len)
    return [e.ids for e in tk.encode_batch(texts, add_special_tokens=True)]


def vm(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))


def pad(ids, rows, pad_id=0):
    import numpy as np
    width = max(len(ids[r]) for r in rows)
    x = np.full((len(rows), width), pad_id, dtype=np.int64)
    m = np.zeros((len(rows), width), dtype=np.int64)
    for k, r in enumerate(rows):
        x[k, :len(ids[r])] = ids[r]; m[k, :len(ids[r])] = 1
    return x, m


def nearest_rank(sorted_ms, p):
    """kd's percentile: the value at rank ceil(p * n), 1-based, clamped to 1..n."""
    return sorted_ms[min(max(math.ceil(p * len(sorted_ms)), 1), len(sorted_ms)) - 1]


def onnx_path(work, cfg):
    """The ONNX file a configuration runs (ort-f32:G -> f32_G.onnx, ort-int8:G:pcP:W -> int8_G_pcP_W.onnx)."""
    parts = cfg.split(":")
    return os.path.join(work, ("f32_" if parts[0] == "ort-f32" else "int8_") + "_".join(parts[1:]) + ".onnx")


def prepare(model_dir, work, configs, threads):
    """Exports/optimizes/quantizes the ONNX files the configurations need (kept in `work`)."""
    os.makedirs(work, exist_ok=True)
    need = {onnx_path(work, c) for c in configs if c.startswith("ort-")}
    need |= {os.path.join(work, "f32_" + c.split(":")[1] + ".onnx") for c in configs if c.startswith("ort-int8")}
    if all(os.path.exists(p) for p in need):
        return
    import torch
    from transformers import AutoModelForSequenceClassification
    torch.set_num_threads(threads)
    ids = torch.randint(1000, 2000, (2, 16)); mask = torch.ones_like(ids)
    names = dict(input_names=["input_ids", "attention_mask"], output_names=["logits"])
    for graph in ("dynamo", "fused"):
        f32 = os.path.join(work, f"f32_{graph}.onnx")
        if f32 not in need or os.path.exists(f32):
            continue
        attn = "sdpa" if graph == "dynamo" else "eager"  # ORT's BERT fusions match eager attention
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32,
                                                                   attn_implementation=attn).eval()
        if graph == "dynamo":
            b, s = torch.export.Dim("batch"), torch.export.Dim("seq", max=512)
            torch.onnx.export(model, (ids, mask), f32, dynamo=True, external_data=False, opset_version=18,
                              dynamic_shapes=({0: b, 1: s}, {0: b, 1: s}), **names)
        else:
            from onnxruntime.transformers.optimizer import optimize_model
            raw = os.path.join(work, "raw_torchscript.onnx")
            torch.onnx.export(model, (ids, mask), raw, dynamo=False, opset_version=17, **names,
                              dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}, "logits": {0: "b"}})
            cfg = model.config
            opt = optimize_model(raw, model_type="bert", num_heads=cfg.num_attention_heads,
                                 hidden_size=cfg.hidden_size, opt_level=1)
            print(f"  fused graph: {dict((k, v) for k, v in opt.get_fused_operator_statistics().items() if v)}")
            opt.save_model_to_file(f32)
            os.remove(raw)
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    for c in configs:
        if c.startswith("ort-int8") and not os.path.exists(onnx_path(work, c)):
            _, graph, pc, wt = c.split(":")
            quantize_dynamic(os.path.join(work, f"f32_{graph}.onnx"), onnx_path(work, c),
                             per_channel=pc == "pc1", weight_type=getattr(QuantType, wt),
                             # the fused graph's contrib ops defeat ONNX shape inference
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def make_runner(cfg, model_dir, work, threads):
    """(run(ids, mask) -> float32 logits as numpy, ONNX file or None)."""
    kind = cfg.split(":")
    if kind[0].startswith("ort"):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = onnx_path(work, cfg)
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        return (lambda x, m: sess.run(["logits"], {"input_ids": x, "attention_mask": m})[0]), path
    import torch
    from transformers import AutoModelForSequenceClassification
    torch.set_num_threads(threads)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32,
                                                               attn_implementation="sdpa").eval()
    if cfg == "torch-bf16:bf16w":
        model = model.to(torch.bfloat16)
    if cfg == "torch-int8:dynamic":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    bf16 = cfg.startswith("torch-bf16")

    def run(x, m):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(input_ids=torch.from_numpy(x), attention_mask=torch.from_numpy(m)).logits
        return out.float().numpy()
    return run, None


def child(cfg, a):
    """Measures one configuration; prints `RESULT {json}`."""
    import numpy as np
    texts, labels = read_rows(a.data, a.rows)
    ids = tokenize(a.model, texts, a.max_len)
    n = len(ids)
    loaded = time.perf_counter()
    run, path = make_runner(cfg, a.model, a.work, a.threads)
    load_s = time.perf_counter() - loaded
    order = sorted(range(n), key=lambda i: (len(ids[i]), i))
    plan = [order[i:i + BATCH] for i in range(0, n, BATCH)]
    pred = np.empty(n, dtype=np.int64)
    for rows in plan:  # accuracy, untimed (warms up)
        pred[rows] = run(*pad(ids, rows)).argmax(-1)
    run(*pad(ids, plan[len(plan) // 2]))
    t0 = time.perf_counter()
    out = [run(*pad(ids, rows)) for rows in plan]
    rows_per_s = n / (time.perf_counter() - t0)
    sample = [i * n // min(LAT_ROWS, n) for i in range(min(LAT_ROWS, n))]
    singles = {r: pad(ids, [r]) for r in sample}
    for r in sample[:WARMUP]:
        run(*singles[r])
    ms = []
    for r in sample:
        t = time.perf_counter()
        np.asarray(run(*singles[r]))
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    assert all(np.isfinite(o).all() for o in out)
    res = dict(config=cfg, family=cfg.split(":")[0], rows=n, accuracy=float((pred == np.array(labels)).mean()),
               mean_tokens=sum(map(len, ids)) / n, rows_per_s=rows_per_s, latency_p50_ms=nearest_rank(ms, 0.5),
               latency_p99_ms=nearest_rank(ms, 0.99), latency_rows=len(ms), threads=a.threads,
               peak_rss_mb=vm("VmHWM") / 2**20, load_seconds=load_s)
    if path:
        res["model_mb"] = os.path.getsize(path) / 1e6
    print("RESULT " + json.dumps(res), flush=True)


def versions():
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for p in ("torch", "transformers", "tokenizers", "numpy", "onnxruntime", "onnx", "onnxscript"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def choose(results, tol):
    """Each family's fastest configuration (rows/s @32) within `tol` accuracy points of torch-f32."""
    ref = next((r["accuracy"] for r in results if r["config"] == "torch-f32"),
               max((r["accuracy"] for r in results), default=0))
    best = {}
    for r in results:
        r["keeps_accuracy"] = r["accuracy"] >= ref - tol / 100 - 1e-12
        if r["keeps_accuracy"] and r["rows_per_s"] > best.get(r["family"], {}).get("rows_per_s", -1):
            best[r["family"]] = r
    return ref, {f: r["config"] for f, r in best.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a `kd export` folder")
    ap.add_argument("--data", required=True, help="the test CSV(.gz), AG News layout")
    ap.add_argument("--rows", type=int, default=0, help="only the first N rows (0: all)")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--work", default=None, help="folder for the ONNX files (reused; default: beside --model)")
    ap.add_argument("--configs", default="all", help="comma-separated, from: " + ", ".join(CONFIGS))
    ap.add_argument("--acc-tol", type=float, default=0.5, help="accuracy points a config may lose vs torch-f32")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.work = a.work or a.model.rstrip("/") + "_onnx"
    if a.child:
        return child(a.child, a)
    configs = CONFIGS if a.configs == "all" else a.configs.split(",")
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        sys.exit(f"unknown configs {sorted(unknown)}; known: {CONFIGS}")
    if a.prepare_only:
        return prepare(a.model, a.work, configs, a.threads)
    texts, _ = read_rows(a.data, a.rows)
    mean_tokens = sum(map(len, tokenize(a.model, texts, a.max_len))) / len(texts)
    print(f"serve_peer: {a.model}, {len(texts)} rows, mean tokens/row {mean_tokens:.3f}, {a.threads} threads")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    # Exporting is noisy (torch.onnx's progress and tracer warnings): in a child, shown on failure.
    p = subprocess.run([sys.executable, __file__, "--prepare-only", "--model", a.model, "--data", a.data,
                        "--work", a.work, "--configs", ",".join(configs), "--threads", str(a.threads)],
                       env=env, capture_output=True, text=True)
    print("".join(l + "\n" for l in p.stdout.splitlines() if "fused graph" in l), end="")
    if p.returncode:
        sys.exit(f"preparing the ONNX files failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    results, failed = [], {}
    for cfg in configs:
        argv = [sys.executable, __file__, "--child", cfg, "--model", a.model, "--data", a.data,
                "--rows", str(a.rows), "--max-len", str(a.max_len), "--threads", str(a.threads), "--work", a.work]
        p = subprocess.run(argv, env=env, capture_output=True, text=True)
        line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
        if p.returncode or not line:
            failed[cfg] = (p.stderr.strip().splitlines() or ["?"])[-1]
            print(f"  {cfg}: FAILED ({failed[cfg]})")
            continue
        results.append(json.loads(line[7:]))
        r = results[-1]
        print(f"  {cfg:30s} acc {r['accuracy']*100:6.2f}%  {r['rows_per_s']:8.1f} rows/s@32  "
              f"p50 {r['latency_p50_ms']:6.2f} ms  p99 {r['latency_p99_ms']:6.2f} ms  peak RSS {r['peak_rss_mb']:6.0f} MB", flush=True)
    ref, best = choose(results, a.acc_tol)
    print(f"\n{'config':30s} {'acc %':>6s} {'rows/s@32':>10s} {'p50 ms':>7s} {'p99 ms':>7s} {'RSS MB':>7s} {'file MB':>8s}  best of family")
    for r in results:
        mark = "BEST" if best.get(r["family"]) == r["config"] else ("" if r["keeps_accuracy"] else "loses accuracy")
        size = f"{r['model_mb']:8.1f}" if "model_mb" in r else f"{'':8s}"
        print(f"{r['config']:30s} {r['accuracy']*100:6.2f} {r['rows_per_s']:10.1f} {r['latency_p50_ms']:7.2f} "
              f"{r['latency_p99_ms']:7.2f} {r['peak_rss_mb']:7.0f} {size}  {mark}")
    print(f"mean tokens/row {mean_tokens:.3f} (compare with kd's serving.mean_tokens: they must agree within 1%)")
    out = dict(model=a.model, data=a.data, rows=len(texts), max_len=a.max_len, threads=a.threads,
               mean_tokens=mean_tokens, accuracy_reference=ref, acc_tol_points=a.acc_tol, best=best,
               results=results, failed=failed, versions=versions())
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
