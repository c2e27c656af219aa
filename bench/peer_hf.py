#!/usr/bin/env python3
"""peer_hf.py -- PyTorch + transformers + PEFT at its best, doing what `kd bench` does.

It runs the rows kd bench runs, at the same batch size and max-len, in PyTorch's fastest
configuration on the machine at hand, and prints the same RESULT keys as kd bench (BenchReport in
src/commands/bench.rs) plus its own configuration. CPU and CUDA.

Rows (as kd bench picks them)
    --data: AG News CSV(.gz) (text = title + " " + description, label = class - 1), tokenised once
    (untimed) from the folder's tokenizer.json, truncated to --max-len, special tokens added. The
    texts are cycled to max(rows, --cache-rows, --batch-size) rows. Training draws from the first
    max(rows, --batch-size) of them, epoch after epoch, until --warmup-steps + --steps batches are
    planned; the caching pass scores the first --cache-rows rows.

Model
    --model DIR: BERT -> BertForSequenceClassification (the checkpoint's pooler trains with the
    classifier: PEFT modules_to_save=["classifier", "pooler"], kd's default), RoBERTa ->
    RobertaForSequenceClassification. --shape roberta-base: RobertaForSequenceClassification with
    random weights of roberta-base's config and the real tokenizer (--tokenizer, default
    ../shared/models/roberta-base-tokenizer). attn_implementation="sdpa". PEFT LoRA r/alpha on
    query,value, dropout 0.1; 4 labels. torch.set_num_threads(os.cpu_count()).

Training (as HF Trainer with group_by_length=True)
    Batches are composed by transformers' own LengthGroupedSampler (each epoch: a random
    permutation cut into mega-batches of 50 x batch rows -- or fewer on small data, the sampler's
    rule --, each sorted by length) cut into consecutive batches of --batch-size, each padded to its
    own longest row. --batch-order shuffled (default) then takes each epoch's batches in a seeded
    random order, as kd does: HF's own order (--batch-order hf) starts every mega-batch with its
    longest batch and descends, so a window of 30 steps would be the longest two thirds of one
    mega-batch instead of a sample of the epoch. Same batches either way; only their order differs.
    Step: forward under the dtype's autocast, cross-entropy with label smoothing 0.1 (kd's),
    backward, gradient clipping at 1.0, AdamW (fused; lr 5e-4, weight decay 0.01).
    --warmup-steps untimed, then --steps timed (collation included, as kd times it).

Caching pass (as kd caches)
    Optimiser and gradients dropped, eval(), torch.inference_mode(), the first --cache-rows rows
    sorted by (length, index), cut into batches of --cache-batch-size, each padded to its own
    longest row; logits copied out as float32. No untimed batch unless --compile is on (then one,
    so that compiling is not timed).

dtype (--dtype auto | f32 | bf16 | bf16w)
    f32: no autocast. bf16: bf16 autocast over float32 weights (TrainingArguments(bf16=True)).
    bf16w: frozen base weights stored in bf16 (loaded with dtype=torch.bfloat16, as kd's bf16
    stores them), LoRA and head in float32, under bf16 autocast. auto: runs each candidate briefly
    in a child process (--probe-steps training steps after 2 untimed ones, and the whole caching
    pass, or --probe-cache-batches N batches of it; the same batches for every candidate), prints all of them and runs the
    measurement with the fastest for training and, separately, the fastest for caching. The
    measuring process never ran the losers, so its peak memory is its own.
    --compile on wraps the model in torch.compile(dynamic=True); --compile auto adds the compiled
    variants to the candidates. The record says which dtype and whether compile was used.

Reported (RESULT line; keys as kd bench's): real and padded tokens of both phases, samples/s,
tokens/s, TFLOP/s and MFU (kd's frozen_base_lora_v1 count over the padded shapes), peak memory
(CPU: the process's VmHWM, as kd reports it; CUDA: torch's max_memory_reserved), the CPU model,
torch/transformers/peft versions, dtype, compile, the grouping used and the dtype probe.

How to run (from the repository root; see bench/README.md for the pinned venv)
    ../venv-peer/bin/python bench/peer_hf.py --model ../shared/models/all-MiniLM-L6-v2 \\
        --data ../shared/data/ag_news/split/train.csv.gz --steps 30 --cache-rows 1600 --cache-batch-size 64
    ../venv-peer/bin/python bench/peer_hf.py --shape roberta-base --data ../shared/data/ag_news/split/train.csv.gz
    # GPU: python3 bench/peer_hf.py --shape roberta-base --device cuda --dtype bf16
"""

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

WALL_T0 = time.perf_counter()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402  (sets the HF offline environment before torch/transformers)

import torch  # noqa: E402

MFU_FORMULA = "frozen_base_lora_v1"
LABEL_SMOOTHING = 0.1  # kd's TrainSettings default, which kd bench's steps use
MAX_GRAD_NORM = 1.0  # kd's (and HF Trainer's) default
LR = 5e-4  # kd bench's
DTYPES = ["f32", "bf16", "bf16w"]

SHAPES = {
    "roberta-base": dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                         pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5),
    "small": dict(vocab_size=50265, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=512, max_position_embeddings=514, type_vocab_size=1,
                  pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5),
}


# ---------------------------------------------------------------------------- model

def weights_dtype(dtype):
    return torch.bfloat16 if dtype == "bf16w" else torch.float32


def build_model(args, dtype):
    """(peft model, config, tokenizer folder, name). Frozen weights in bf16 for bf16w, else f32;
    everything trainable (LoRA, head, BERT's pooler) in float32."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

    wdt = weights_dtype(dtype)
    extra = []
    if args.model:
        config = pc.load_config(args.model, args.num_labels)
        if config.model_type == "roberta":
            cls = RobertaForSequenceClassification
        elif config.model_type == "bert":
            cls, extra = BertForSequenceClassification, ["pooler"]
        else:
            raise SystemExit(f"unsupported model_type {config.model_type!r} (bert or roberta)")
        base = cls.from_pretrained(args.model, config=config, dtype=wdt, attn_implementation=args.attn,
                                   local_files_only=True)
        tok_dir = args.tokenizer or args.model
        name = os.path.abspath(args.model)
    else:
        config = RobertaConfig(num_labels=args.num_labels, **SHAPES[args.shape])
        torch.manual_seed(args.seed)
        base = RobertaForSequenceClassification._from_config(config, attn_implementation=args.attn, dtype=wdt)
        tok_dir = args.tokenizer or "../shared/models/roberta-base-tokenizer"
        name = f"{args.shape} (random weights)"
    lora = pc.lora_kwargs(args.lora_r, args.lora_alpha, args.lora_dropout)
    model = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_CLS, modules_to_save=extra or None, **lora))
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model, config, tok_dir, name


def set_frozen_dtype(model, dt):
    """Stores the frozen (non-trainable) floating-point weights in dt (between phases only)."""
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point() and p.dtype != dt:
            p.data = p.data.to(dt)


def compiled_graphs():
    """How many graphs torch.compile has compiled so far (to show recompiles inside a timed phase)."""
    try:
        from torch._dynamo.utils import counters
        return int(counters["stats"]["unique_graphs"])
    except Exception:
        return 0


def n_lora_params(model):
    """kd's N_lora: trainable parameters outside the classifier (LoRA, and BERT's pooler)."""
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n)


# ----------------------------------------------------------------------------- probe

def probe(args, argv):
    """Picks (dtype, compile) for training and, separately, for caching. Each candidate runs briefly
    in a child process (the same batches for all). --dtype auto tries f32, bf16 and bf16w eagerly;
    --compile auto then tries the winning dtype(s) under torch.compile. Returns (train choice,
    cache choice, every candidate's figures or None)."""
    if args.dtype != "auto" and args.compile != "auto":
        return ((args.dtype, args.compile),
                (args.cache_dtype or args.dtype, args.cache_compile or args.compile), None)
    figures = {}
    # The caching pass is short, so each candidate times all of it: a probe of a few batches
    # picked eager caching on all three CPU shapes where whole passes ran 1.15-1.4x faster
    # compiled (runs 10-12, docs/benchmarks.md). --probe-cache-batches N cuts it for quick checks.
    cache_rows = args.cache_rows
    if args.probe_cache_batches > 0:
        cache_rows = min(cache_rows, args.probe_cache_batches * args.cache_batch_size)

    def run(d, c):
        key = f"{d}{'+compile' if c == 'on' else ''}"
        cmd = [sys.executable, os.path.abspath(__file__)] + argv + [
            "--dtype", d, "--compile", c, "--warmup-steps", "2", "--steps", str(args.probe_steps),
            "--cache-rows", str(cache_rows), "--probe"]
        if c == "on":
            # A compiled model compiles twice (static, then dynamic shapes) and then keeps up with
            # every length; a 4-batch probe timed those compilations and picked eager caching,
            # which a whole pass then ran 1.15-1.4x slower than compiled (run 11, docs/benchmarks.md).
            cmd += ["--cache-warmup-batches", "2"]
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            tail = (out.stdout + out.stderr).strip().splitlines()[-3:]
            print(f"  probe {key:<13}: failed ({' | '.join(tail)})", flush=True)
            return
        r = json.loads(lines[-1][len("RESULT "):])
        figures[key] = {"dtype": d, "compile": c == "on", "train_samples_per_s": r["train_samples_per_s"],
                        "cache_samples_per_s": r["cache_samples_per_s"],
                        "graphs_compiled_while_timed": r["graphs_compiled_while_timed"]}
        print(f"  probe {key:<13}: train {r['train_samples_per_s']:7.1f} samples/s, cache "
              f"{r['cache_samples_per_s']:7.1f} samples/s ({time.perf_counter() - t:.0f}s)", flush=True)

    def best(key):
        if not figures:
            raise SystemExit("every candidate failed; run one with --dtype/--compile to see why")
        return max(figures.values(), key=lambda f: f[key])

    dtypes = DTYPES if args.dtype == "auto" else [args.dtype]
    first = "off" if args.compile == "auto" else args.compile
    for d in dtypes:
        run(d, first)
    if args.compile == "auto":
        for d in dict.fromkeys([best("train_samples_per_s")["dtype"], best("cache_samples_per_s")["dtype"]]):
            run(d, "on")
    pick = lambda f: (f["dtype"], "on" if f["compile"] else "off")  # noqa: E731
    return pick(best("train_samples_per_s")), pick(best("cache_samples_per_s")), figures


def strip_probe_flags(argv):
    """argv without the flags probe() sets (argparse keeps the last, but keep the command clean)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in ("--dtype", "--compile", "--cache-dtype", "--cache-compile", "--warmup-steps", "--steps",
                    "--cache-rows", "--json"):
            skip = "=" not in a
            continue
        if name == "--probe":
            continue
        out.append(a)
    return out


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(
        description="PyTorch + transformers + PEFT at its best, doing kd bench's work (same rows, "
                    "batch size, max-len; same RESULT keys).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, help="local BERT/RoBERTa folder (instead of --shape)")
    src.add_argument("--shape", default="roberta-base", choices=sorted(SHAPES),
                     help="randomly initialised RoBERTa of this shape")
    ap.add_argument("--tokenizer", default=None,
                    help="tokenizer folder (default: --model, or ../shared/models/roberta-base-tokenizer)")
    ap.add_argument("--data", default="../shared/data/ag_news/test.csv.gz", help="AG News CSV(.gz)")
    ap.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:N")
    ap.add_argument("--dtype", choices=["auto"] + DTYPES, default="auto",
                    help="f32; bf16 = autocast over f32 weights; bf16w = frozen weights in bf16 + "
                         "autocast; auto = probe them and keep the fastest per phase")
    ap.add_argument("--compile", choices=["off", "on", "auto"], default="off",
                    help="torch.compile(model, dynamic=True); auto probes with and without")
    ap.add_argument("--cache-dtype", choices=DTYPES, default=None,
                    help="the caching pass's dtype when it differs from --dtype's (not with auto)")
    ap.add_argument("--cache-compile", choices=["off", "on"], default=None,
                    help="the caching pass's --compile when it differs (not with auto)")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    pc.add_lora_args(ap)
    ap.add_argument("--warmup-steps", type=int, default=3, help="untimed training steps")
    ap.add_argument("--steps", default="20",
                    help="timed training steps, or 'epoch': one epoch's batches less the warm-up ones")
    ap.add_argument("--cache-rows", type=int, default=1024)
    ap.add_argument("--cache-batch-size", type=int, default=128)
    ap.add_argument("--cache-warmup-batches", type=int, default=None,
                    help="untimed caching batches (default: 2 with compile, else 0 as in kd)")
    ap.add_argument("--batch-order", choices=["shuffled", "hf"], default="shuffled",
                    help="order of each epoch's length-grouped batches (their composition is HF's either way)")
    ap.add_argument("--mega-batches", type=int, default=None,
                    help="mega-batch size in batches (default: LengthGroupedSampler's own, "
                         "min(rows // (4 x batch), 50); kd buckets 50)")
    ap.add_argument("--probe-steps", type=int, default=4, help="--dtype/--compile auto: timed steps per candidate")
    ap.add_argument("--probe-cache-batches", type=int, default=0,
                    help="--dtype/--compile auto: caching batches per candidate (0: the whole pass)")
    ap.add_argument("--adamw", choices=["fused", "foreach", "loop"], default="fused",
                    help="torch AdamW implementation (HF Trainer's default optim is adamw_torch_fused)")
    ap.add_argument("--peak-tflops", type=float, default=800.0, help="dense peak for the MFU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default os.cpu_count())")
    ap.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 matmuls (matters for f32)")
    ap.add_argument("--json", default=None, help="also write the RESULT record here")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    threads, device = pc.setup_torch(args.threads, args.seed, args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    transformers, peft, banner = pc.versions()
    import_rss = pc.vm_hwm_bytes()  # what importing torch/transformers/peft left resident
    cpu = pc.cpu_description()
    dev_name = torch.cuda.get_device_name(device) if cuda else cpu
    say = (lambda *a, **k: None) if args.probe else print
    say(f"{banner}; device {device} ({dev_name}); threads {threads}; attn {args.attn}")

    # ---- which dtype/compile (children of this process measure the candidates)
    dtype_probe = None
    if args.probe:
        (train_dtype, train_compile), (cache_dtype, cache_compile) = (args.dtype, args.compile), (args.dtype, args.compile)
    else:
        if args.dtype == "auto" or args.compile == "auto":
            print(f"probing dtype {args.dtype}, compile {args.compile} ({args.probe_steps} training steps and "
                  f"{'the whole caching pass' if args.probe_cache_batches <= 0 else str(args.probe_cache_batches) + ' caching batches'} "
                  "each, in child processes):", flush=True)
            if args.cache_dtype or args.cache_compile:
                print("  (--cache-dtype/--cache-compile are ignored: auto picks the caching pass's too)")
        (train_dtype, train_compile), (cache_dtype, cache_compile), dtype_probe = probe(
            args, strip_probe_flags(sys.argv[1:]))
        print(f"training: dtype {train_dtype}, compile {train_compile}; caching: dtype {cache_dtype}, "
              f"compile {cache_compile}", flush=True)

    # ---- model
    t = time.perf_counter()
    model, config, tok_dir, model_name = build_model(args, train_dtype)
    model.to(device)
    trainable, total = model.get_nb_trainable_parameters()
    L, H, F = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    n_mm = L * (4 * H * H + 2 * H * F)
    n_lora = n_lora_params(model)
    say(f"model {model_name}: L={L} H={H} F={F} heads={config.num_attention_heads}; trainable "
        f"{trainable:,} / total {total:,}; built in {time.perf_counter() - t:.2f}s")

    def train_flops(b, s):
        return 4 * n_mm * b * s + 12 * L * H * b * s * s + 6 * n_lora * b * s

    def infer_flops(b, s):
        return 2 * n_mm * b * s + 4 * L * H * b * s * s

    # ---- rows (untimed tokenisation), as kd bench picks them
    t = time.perf_counter()
    texts, labels = pc.read_ag_news(args.data)
    n = len(texts)
    tok = pc.load_tokenizer(tok_dir, False)
    rows = pc.row_tensors(pc.tokenize(tok, texts, args.max_len))
    pad_id = tok.pad_token_id
    needed = max(n, args.cache_rows, args.batch_size)
    lengths = [len(rows[i % n]) for i in range(needed)]
    distinct = max(n, args.batch_size)
    steps = (max(1, math.ceil(distinct / args.batch_size) - args.warmup_steps) if args.steps == "epoch"
             else int(args.steps))
    say(f"data: {n} rows from {args.data} (cycled to {needed}), mean length {sum(lengths[:n]) / n:.1f} tokens "
        f"(max {max(lengths)}), tokenised in {time.perf_counter() - t:.2f}s")

    def make_batch(idx, with_labels):
        ids, mask = pc.pad_rows(rows, [i % n for i in idx], pad_id)
        b = {"input_ids": ids.to(device, non_blocking=True), "attention_mask": mask.to(device, non_blocking=True)}
        y = torch.tensor([labels[i % n] for i in idx], dtype=torch.long).to(device) if with_labels else None
        return b, y

    # ---- training plan: HF's length grouping over the first `distinct` rows, epoch after epoch
    gen = torch.Generator().manual_seed(args.seed)
    grouping = pc.LengthGrouping(lengths[:distinct], args.batch_size, gen, args.mega_batches)
    plan = []
    while len(plan) < args.warmup_steps + steps:
        epoch = grouping.epoch()
        if args.batch_order == "shuffled":
            epoch = [epoch[i] for i in torch.randperm(len(epoch), generator=gen).tolist()]
        plan.extend(epoch)
    plan = plan[:args.warmup_steps + steps]

    # ---- training phase
    import torch.nn.functional as Fn

    params = [p for p in model.parameters() if p.requires_grad]
    opt_kw = dict(lr=LR, weight_decay=args.weight_decay)
    if args.adamw == "fused":
        opt_kw["fused"] = True
    elif args.adamw == "foreach":
        opt_kw["foreach"] = True
    opt = torch.optim.AdamW(params, **opt_kw)
    fwd_train = torch.compile(model, dynamic=True) if train_compile == "on" else model
    train_ac = train_dtype
    model.train()

    def train_step(idx):
        batch, y = make_batch(idx, True)
        with pc.make_autocast(device, train_ac):
            logits = fwd_train(**batch).logits
        loss = Fn.cross_entropy(logits.float(), y, label_smoothing=LABEL_SMOOTHING)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    pc.reset_peak(device)
    t = time.perf_counter()
    for idx in plan[:args.warmup_steps]:
        train_step(idx)
    pc.sync(device)
    if args.warmup_steps:
        say(f"warm-up: {args.warmup_steps} steps in {time.perf_counter() - t:.2f}s")
    tr_samples = tr_tokens = tr_padded = 0
    tr_flops = 0.0
    loss = None
    graphs0 = compiled_graphs()
    t0 = time.perf_counter()
    for idx in plan[args.warmup_steps:]:
        loss = train_step(idx)
        s = max(lengths[i] for i in idx)
        tr_samples += len(idx)
        tr_tokens += sum(lengths[i] for i in idx)
        tr_padded += len(idx) * s
        tr_flops += train_flops(len(idx), s)
    pc.sync(device)
    train_s = max(time.perf_counter() - t0, 1e-9)
    train_recompiles = compiled_graphs() - graphs0
    last_loss = float(loss.detach()) if loss is not None else float("nan")
    if cuda:
        train_peak = pc.peak_reserved(device)
        train_peak_alloc = pc.peak_allocated(device)
    else:
        train_peak, train_peak_alloc = pc.vm_hwm_bytes(), None
    say(f"train: {steps} timed steps (+{args.warmup_steps} warm-up), {tr_samples} samples in {train_s:.3f}s -> "
        f"{tr_samples / train_s:.1f} samples/s, {tr_tokens / train_s:.0f} tokens/s; {tr_tokens} real / "
        f"{tr_padded} padded tokens; last loss {last_loss:.4f}; peak memory "
        f"{(train_peak or 0) / 2**20:.0f} MiB" + (f"; {train_recompiles} graphs compiled while timed"
                                                 if train_recompiles else ""))

    # ---- caching phase
    opt = params = fwd_train = None  # free the optimiser state before the caching pass
    model.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.empty_cache()
    model.eval()
    if weights_dtype(cache_dtype) != weights_dtype(train_dtype):
        set_frozen_dtype(model, weights_dtype(cache_dtype))
    fwd_cache = torch.compile(model, dynamic=True) if cache_compile == "on" else model
    cplan = pc.sorted_plan(lengths, range(args.cache_rows), args.cache_batch_size)
    warm = args.cache_warmup_batches
    if warm is None:
        # Compiled: the static and the dynamic-shape compilation before the clock starts.
        warm = 2 if cache_compile == "on" else 0
    out = torch.empty((args.cache_rows, args.num_labels), dtype=torch.float32)
    c_tokens = c_padded = 0
    c_flops = 0.0
    with torch.inference_mode():
        for idx in cplan[:warm]:
            with pc.make_autocast(device, cache_dtype):
                fwd_cache(**make_batch(idx, False)[0]).logits.float().cpu()
        pc.sync(device)
        graphs0 = compiled_graphs()
        t0 = time.perf_counter()
        for idx in cplan:
            batch, _ = make_batch(idx, False)
            with pc.make_autocast(device, cache_dtype):
                lg = fwd_cache(**batch).logits
            out[idx] = lg.float().cpu()
        pc.sync(device)
        cache_s = max(time.perf_counter() - t0, 1e-9)
        cache_recompiles = compiled_graphs() - graphs0
    for idx in cplan:
        s = max(lengths[i] for i in idx)
        c_tokens += sum(lengths[i] for i in idx)
        c_padded += len(idx) * s
        c_flops += infer_flops(len(idx), s)
    finite = bool(torch.isfinite(out).all())
    peak = pc.peak_reserved(device) if cuda else pc.vm_hwm_bytes()
    say(f"cache: {args.cache_rows} rows, batch {args.cache_batch_size}, in {cache_s:.3f}s -> "
        f"{args.cache_rows / cache_s:.1f} samples/s, {c_tokens / cache_s:.0f} tokens/s; {c_tokens} real / "
        f"{c_padded} padded tokens; logits finite: {finite}; peak memory {(peak or 0) / 2**20:.0f} MiB")

    dtype = train_dtype if train_dtype == cache_dtype else f"train {train_dtype}, cache {cache_dtype}"
    pk = args.peak_tflops * 1e12
    result = {
        # kd bench's keys (BenchReport), in its order
        "script": "peer_hf",
        "model": model_name,
        "device": str(device) if not cuda else f"{device} ({dev_name})",
        "cpu": cpu,
        "dtype": dtype,
        "layers": L,
        "hidden": H,
        "ffn": F,
        "batch_size": args.batch_size,
        "max_len": args.max_len,
        "lora_r": args.lora_r,
        "trainable_params": int(trainable),
        "steps": steps,
        "train_samples": tr_samples,
        "train_tokens": tr_tokens,
        "train_padded_tokens": tr_padded,
        "train_seconds": train_s,
        "train_samples_per_s": tr_samples / train_s,
        "train_tokens_per_s": tr_tokens / train_s,
        "train_tflops": tr_flops / train_s / 1e12,
        "train_mfu": tr_flops / train_s / pk,
        "cache_rows": args.cache_rows,
        "cache_tokens": c_tokens,
        "cache_padded_tokens": c_padded,
        "cache_seconds": cache_s,
        "cache_samples_per_s": args.cache_rows / cache_s,
        "cache_tokens_per_s": c_tokens / cache_s,
        "cache_tflops": c_flops / cache_s / 1e12,
        "cache_mfu": c_flops / cache_s / pk,
        "train_peak_mem_bytes": train_peak,
        "peak_mem_bytes": peak,
        "mfu_formula": MFU_FORMULA,
        # the peer's own
        "peak_mem_source": "max_memory_reserved" if cuda else "VmHWM",
        "import_peak_mem_bytes": import_rss,
        "train_peak_allocated_bytes": train_peak_alloc,
        "train_dtype": train_dtype,
        "cache_dtype": cache_dtype,
        "compile": train_compile == "on",
        "cache_compile": cache_compile == "on",
        "graphs_compiled_while_timed": {"train": train_recompiles, "cache": cache_recompiles},
        "dtype_probe": dtype_probe,
        "attn": args.attn,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "grouping": grouping.source,
        "mega_batch_mult": grouping.effective_mult,
        "batch_order": args.batch_order,
        "distinct_train_rows": distinct,
        "lora_alpha": args.lora_alpha,
        "lora_dropout": args.lora_dropout,
        "cache_batch_size": args.cache_batch_size,
        "cache_warmup_batches": warm,
        "warmup_steps": args.warmup_steps,
        "adamw": args.adamw,
        "last_loss": last_loss,
        "cache_logits_finite": finite,
        "n_matmul_params": n_mm,
        "n_lora_params": n_lora,
        "total_params": int(total),
        "peak_tflops": args.peak_tflops,
        "data": os.path.abspath(args.data),
        "wall_seconds": time.perf_counter() - WALL_T0,
    }
    if args.json and not args.probe:
        with open(args.json, "w") as f:
            json.dump(result, f)
    pc.emit_result(result)


if __name__ == "__main__":
    main()
