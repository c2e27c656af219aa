#!/usr/bin/env python3
"""peer_hf.py -- GPU speed peer for `kd bench` (PyTorch / transformers / PEFT).

What it measures
----------------
The same work `kd bench` does, done the standard Hugging Face way, for the mission's
roberta-base case (or any local BERT/RoBERTa folder):

  Model
    * --shape roberta-base (default): RobertaForSequenceClassification with randomly
      initialised weights of the real roberta-base shape (vocab 50265, hidden 768, 12 layers,
      12 heads, FFN 3072, max positions 514, type vocab 1, pad id 1, LN eps 1e-5), 4 labels;
      tokenizer ../shared/models/roberta-base-tokenizer. No roberta-base weights exist here,
      and speed does not depend on the values.
    * --shape small: a 2-layer, hidden-128, 2-head, FFN-512 RoBERTa (CPU smoke test).
    * --model DIR: a local folder. RoBERTa -> RobertaForSequenceClassification.from_pretrained;
      BERT -> BertModel(add_pooling_layer=False) + transformers' RobertaClassificationHead on
      the first token (kd uses RoBERTa's head for every backbone).
    Weights are float32; attn_implementation="sdpa". PEFT LoRA r=8, alpha=32, dropout 0.1 on
    query,value; the classification head is fully trainable (task_type SEQ_CLS, i.e.
    modules_to_save=["classifier"]).

  Data
    The real AG News test texts (--data, default ../shared/data/ag_news/test.csv.gz;
    text = title + " " + description, label = class-1), tokenised once with truncation to
    --max-len (not timed), then batched with transformers' DataCollatorWithPadding (dynamic
    padding to the longest row of each batch; collation runs inside the timed loop, as a
    DataLoader with num_workers=0 would).

  Training phase
    model.train(), bf16 autocast (--dtype bf16; --dtype f32 disables autocast), torch AdamW
    lr 5e-4 (weight decay 0.01), batch 32, rows in a seeded shuffled order (reshuffled each
    pass over the data, repeated as needed). --warmup-steps W steps (default 5) untimed, then
    --steps N (default 50) timed between torch.cuda.synchronize() calls.

  Caching phase (teacher-logit caching)
    The optimiser and gradients are freed first. model.eval(), torch.no_grad(), bf16 autocast,
    batch --cache-batch-size (default 128) over the first --cache-rows rows (default 7600) in
    file order, each batch's logits copied to CPU float32. --cache-warmup-batches (default 1)
    untimed batches first, then the whole pass is timed.

  Reported
    train samples/s and tokens/s, caching samples/s and tokens/s (tokens = non-padding tokens =
    sum of attention_mask), peak GPU memory of each phase (torch.cuda.max_memory_allocated,
    reset before each phase), and MFU against --peak-tflops (default 800 TFLOP/s bf16 dense).

  FLOP formula ("frozen_base_lora_v1"), counted on the *padded* batch shapes (that is the
  work the GPU is given; B rows of padded length S per batch, T = sum over batches of B*S):
      N      = L * (4*H^2 + 2*H*F)             encoder linear weights (no embeddings/head)
      N_lora = L * 2 * (2*H*r)                 LoRA A and B on query and value
      train  = 4*N*T                           forward 2NT + backward activation grads 2NT
                                               (base weights frozen: no weight-grad GEMMs)
             + 12*L*H*sum(B*S^2)               attention QK^T and PV: forward 4LHS^2 per row,
                                               backward twice that
             + 6*N_lora*T                      LoRA forward + full backward
      cache  = 2*N*T + 4*L*H*sum(B*S^2)        forward only
      MFU    = flops / seconds / (peak_tflops * 1e12)
  The classification head, embeddings, LayerNorm, softmax and GELU are left out (small).
  For reference, full fine-tuning would be the usual 6*N*T (+ attention).

How to run
----------
  # GPU (the device machine's python holds torch/transformers/peft):
  python3 bench/peer_hf.py --shape roberta-base --device cuda
  python3 bench/peer_hf.py --model ../shared/models/all-MiniLM-L6-v2 --device cuda
  # CPU smoke test:
  .venv/bin/python bench/peer_hf.py --shape small --device cpu --steps 2 --warmup-steps 1 --cache-rows 64

The last line of stdout is `RESULT {json}` for the Rust-side harness. Only torch,
transformers, peft, safetensors, numpy and the standard library are used; written for
transformers 4.57 and tolerant of 5.x.
"""

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402  (sets the HF offline environment before torch/transformers)

import torch  # noqa: E402

FLOP_FORMULA = "frozen_base_lora_v1: 4*N*T + 12*L*H*sum(B*S^2) + 6*N_lora*T (padded shapes)"
CACHE_FLOP_FORMULA = "forward_v1: 2*N*T + 4*L*H*sum(B*S^2) (padded shapes)"

SHAPES = {
    "roberta-base": dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                         pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5),
    "small": dict(vocab_size=50265, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=512, max_position_embeddings=514, type_vocab_size=1,
                  pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5),
}


# ---------------------------------------------------------------------------- model

def build_model(args):
    from transformers import BertModel, RobertaConfig, RobertaForSequenceClassification
    from peft import LoraConfig, TaskType, get_peft_model

    lora = pc.lora_kwargs(args.lora_r, args.lora_alpha, args.lora_dropout)
    if args.model:
        config = pc.load_config(args.model, args.num_labels)
        tok_dir = args.tokenizer or args.model
        if config.model_type == "roberta":
            base = RobertaForSequenceClassification.from_pretrained(
                args.model, config=config, dtype=torch.float32, attn_implementation=args.attn,
                local_files_only=True)
            model = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_CLS, **lora))
        elif config.model_type == "bert":
            model = pc.encoder_head_lora(BertModel, args.model, config, lora, attn_implementation=args.attn)
        else:
            raise SystemExit(f"unsupported model_type {config.model_type!r} (bert or roberta)")
        name = os.path.abspath(args.model)
    else:
        config = RobertaConfig(num_labels=args.num_labels, **SHAPES[args.shape])
        try:
            config._attn_implementation = args.attn
        except Exception:
            pass
        try:
            base = RobertaForSequenceClassification._from_config(config, attn_implementation=args.attn)
        except TypeError:
            base = RobertaForSequenceClassification(config)
        base = base.float()
        model = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_CLS, **lora))
        tok_dir = args.tokenizer or "../shared/models/roberta-base-tokenizer"
        name = f"random:{args.shape}"
    return model, config, tok_dir, name


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(
        description="GPU speed peer for `kd bench`: LoRA training + logit-caching throughput "
                    "with transformers/PEFT.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, help="local BERT/RoBERTa folder (instead of --shape)")
    src.add_argument("--shape", default="roberta-base", choices=sorted(SHAPES),
                     help="randomly initialised RoBERTa of this shape")
    ap.add_argument("--tokenizer", default=None,
                    help="tokenizer folder (default: --model, or ../shared/models/roberta-base-tokenizer)")
    ap.add_argument("--data", default="../shared/data/ag_news/test.csv.gz", help="AG News CSV(.gz)")
    ap.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu")
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16", help="bf16 autocast or plain f32")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    pc.add_lora_args(ap)
    ap.add_argument("--warmup-steps", type=int, default=5, help="untimed training steps")
    ap.add_argument("--steps", type=int, default=50, help="timed training steps")
    ap.add_argument("--cache-batch-size", type=int, default=128)
    ap.add_argument("--cache-rows", type=int, default=7600)
    ap.add_argument("--cache-warmup-batches", type=int, default=1, help="untimed caching batches")
    ap.add_argument("--peak-tflops", type=float, default=800.0, help="dense bf16 peak for MFU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default os.cpu_count())")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (only matters with --dtype f32)")
    ap.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True) (CUDA only)")
    args = ap.parse_args()

    wall0 = time.perf_counter()
    threads, device = pc.setup_torch(args.threads, args.seed, args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def autocast():
        return pc.make_autocast(device, args.dtype)

    transformers, peft, banner = pc.versions()
    from transformers import DataCollatorWithPadding

    dev_name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    print(f"{banner}; device {device} ({dev_name}), dtype {args.dtype}, attn {args.attn}")

    # ---- model
    t = time.perf_counter()
    model, config, tok_dir, model_name = build_model(args)
    model.to(device)
    trainable, total = model.get_nb_trainable_parameters()
    L, H, F = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    n_mm = L * (4 * H * H + 2 * H * F)
    n_lora = L * 2 * (2 * H * args.lora_r)
    print(f"model {model_name}: L={L} H={H} F={F} heads={config.num_attention_heads}; "
          f"trainable {trainable:,} / total {total:,}; N_matmul {n_mm:,}; built in {time.perf_counter() - t:.2f}s")

    # ---- data (untimed tokenisation)
    t = time.perf_counter()
    texts, labels = pc.read_ag_news(args.data)
    with_tt = getattr(config, "type_vocab_size", 1) > 1
    tok = pc.load_tokenizer(tok_dir, with_tt)
    feats = pc.tokenize(tok, texts, args.max_len)
    lens = [len(f["input_ids"]) for f in feats]
    collator = DataCollatorWithPadding(tok, padding="longest", return_tensors="pt")
    print(f"data: {len(feats)} rows from {args.data}, mean length {sum(lens) / len(lens):.1f} tokens "
          f"(max {max(lens)}), tokenised in {time.perf_counter() - t:.2f}s")

    # ---- training phase
    gen = torch.Generator().manual_seed(args.seed)
    stream = []

    def next_rows(n):
        nonlocal stream
        while len(stream) < n:
            stream += torch.randperm(len(feats), generator=gen).tolist()
        rows, stream = stream[:n], stream[n:]
        return rows

    def make_batch(rows, with_labels):
        fs = []
        for i in rows:
            f = dict(feats[i])
            if with_labels:
                f["labels"] = labels[i]
            fs.append(f)
        b = collator(fs)
        return {k: v.to(device, non_blocking=True) for k, v in b.items()}

    params = [p for p in model.parameters() if p.requires_grad]
    opt_kw = dict(lr=args.lr, weight_decay=args.weight_decay)
    if args.fused_adamw and cuda:
        opt_kw["fused"] = True
    opt = torch.optim.AdamW(params, **opt_kw)
    model.train()

    def train_step():
        batch = make_batch(next_rows(args.batch_size), True)
        with autocast():
            loss, _ = pc.model_out(model(**batch))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        m = batch["attention_mask"]
        return loss, int(m.shape[0]), int(m.shape[1]), m

    pc.reset_peak(device)
    for _ in range(args.warmup_steps):
        train_step()
    pc.sync(device)
    masks, shapes = [], []
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss, b, s, m = train_step()
        masks.append(m.sum())  # stays on device; summed after timing
        shapes.append((b, s))
    pc.sync(device)
    train_s = time.perf_counter() - t0
    train_peak = pc.peak_allocated(device)
    train_peak_reserved = pc.peak_reserved(device)
    last_loss = float(loss.detach()) if args.steps else float("nan")
    train_samples = sum(b for b, _ in shapes)
    train_tokens = int(sum(int(x) for x in masks))
    t_pad = sum(b * s for b, s in shapes)
    s2 = sum(b * s * s for b, s in shapes)
    train_flops = 4 * n_mm * t_pad + 12 * L * H * s2 + 6 * n_lora * t_pad
    train_sps = train_samples / train_s if train_s > 0 else float("nan")
    train_tps = train_tokens / train_s if train_s > 0 else float("nan")
    train_tflops = train_flops / train_s / 1e12 if train_s > 0 else float("nan")
    train_mfu = train_tflops / args.peak_tflops
    print(f"train: {args.steps} timed steps (+{args.warmup_steps} warm-up), {train_samples} samples in "
          f"{train_s:.3f}s -> {train_sps:.1f} samples/s, {train_tps:.0f} tokens/s "
          f"(padding {100.0 * (1 - train_tokens / max(t_pad, 1)):.1f}%), {train_tflops:.2f} TFLOP/s, "
          f"MFU {100 * train_mfu:.2f}% of {args.peak_tflops:g}; last loss {last_loss:.4f}"
          + (f"; peak mem {train_peak / 2**30:.2f} GiB" if cuda else ""))

    # ---- caching phase
    del opt, params
    model.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.empty_cache()
    model.eval()
    rows = [i % len(feats) for i in range(args.cache_rows)]
    out = torch.empty((len(rows), args.num_labels), dtype=torch.float32)
    pc.reset_peak(device)
    with torch.no_grad():
        bs = args.cache_batch_size
        for w in range(min(args.cache_warmup_batches, (len(rows) + bs - 1) // bs)):
            with autocast():
                _, lg = pc.model_out(model(**make_batch(rows[w * bs:(w + 1) * bs], False)))
            lg.float().cpu()
        pc.sync(device)
        c_masks, c_shapes = [], []
        t0 = time.perf_counter()
        for b0 in range(0, len(rows), bs):
            batch = make_batch(rows[b0:b0 + bs], False)
            with autocast():
                _, lg = pc.model_out(model(**batch))
            out[b0:b0 + lg.shape[0]] = lg.float().cpu()
            m = batch["attention_mask"]
            c_masks.append(m.sum())
            c_shapes.append((int(m.shape[0]), int(m.shape[1])))
        pc.sync(device)
        cache_s = time.perf_counter() - t0
    cache_peak = pc.peak_allocated(device)
    cache_tokens = int(sum(int(x) for x in c_masks))
    c_pad = sum(b * s for b, s in c_shapes)
    c_s2 = sum(b * s * s for b, s in c_shapes)
    cache_flops = 2 * n_mm * c_pad + 4 * L * H * c_s2
    cache_sps = len(rows) / cache_s if cache_s > 0 else float("nan")
    cache_tps = cache_tokens / cache_s if cache_s > 0 else float("nan")
    cache_tflops = cache_flops / cache_s / 1e12 if cache_s > 0 else float("nan")
    finite = bool(torch.isfinite(out).all())
    print(f"cache: {len(rows)} rows, batch {args.cache_batch_size}, in {cache_s:.3f}s -> {cache_sps:.1f} "
          f"samples/s, {cache_tps:.0f} tokens/s, {cache_tflops:.2f} TFLOP/s, MFU "
          f"{100 * cache_tflops / args.peak_tflops:.2f}%; logits finite: {finite}"
          + (f"; peak mem {cache_peak / 2**30:.2f} GiB" if cuda else ""))

    wall_s = time.perf_counter() - wall0
    result = {
        "script": "peer_hf",
        "model": model_name,
        "device": str(device),
        "device_name": dev_name,
        "dtype": args.dtype,
        "attn": args.attn,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "threads": threads,
        "layers": L,
        "hidden": H,
        "ffn": F,
        "batch_size": args.batch_size,
        "max_len": args.max_len,
        "lr": args.lr,
        "lora_r": args.lora_r,
        "lora_alpha": args.lora_alpha,
        "trainable_params": int(trainable),
        "total_params": int(total),
        "n_matmul_params": n_mm,
        "warmup_steps": args.warmup_steps,
        "steps": args.steps,
        "train_samples": train_samples,
        "train_tokens": train_tokens,
        "train_padded_tokens": t_pad,
        "train_seconds": train_s,
        "train_samples_per_s": train_sps,
        "train_tokens_per_s": train_tps,
        "train_tflops": train_tflops,
        "train_mfu": train_mfu,
        "last_loss": last_loss,
        "train_peak_mem_bytes": train_peak,
        "train_peak_reserved_bytes": train_peak_reserved,
        "cache_rows": len(rows),
        "cache_batch_size": args.cache_batch_size,
        "cache_tokens": cache_tokens,
        "cache_padded_tokens": c_pad,
        "cache_seconds": cache_s,
        "cache_samples_per_s": cache_sps,
        "cache_tokens_per_s": cache_tps,
        "cache_tflops": cache_tflops,
        "cache_mfu": cache_tflops / args.peak_tflops,
        "cache_peak_mem_bytes": cache_peak,
        "cache_logits_finite": finite,
        "peak_tflops": args.peak_tflops,
        "mfu_formula": FLOP_FORMULA,
        "cache_flop_formula": CACHE_FLOP_FORMULA,
        "wall_seconds": wall_s,
    }
    pc.emit_result(result)


if __name__ == "__main__":
    main()
