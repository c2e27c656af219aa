#!/usr/bin/env python3
"""peer_train.py -- real-data accuracy + speed peer for `kd` (PyTorch / transformers / PEFT).

What it measures
----------------
Fine-tunes a local BERT-family encoder folder (e.g. ../shared/models/all-MiniLM-L6-v2) on
AG News with PEFT LoRA, the same recipe kd's trainer uses, then evaluates on the test split:

  * model: the encoder (BertModel(add_pooling_layer=False), or RobertaModel for a RoBERTa
    folder) loaded in float32 from the folder's safetensors, plus transformers'
    RobertaClassificationHead on the first token (dropout -> dense HxH -> tanh -> dropout ->
    out_proj HxC). kd uses RoBERTa's head for every backbone. The head is randomly
    initialised like HF's _init_weights (normal(0, initializer_range), zero bias) and is
    fully trainable (PEFT modules_to_save=["classifier"]).
  * LoRA: target_modules=["query","value"], r=--lora-r, alpha=--lora-alpha, dropout 0.1.
  * optimiser: torch AdamW(lr, weight_decay=0.01 on every trainable tensor, betas 0.9/0.999,
    eps 1e-8); transformers.get_cosine_schedule_with_warmup with ceil(6% of total steps)
    warmup; loss = cross entropy; gradients not clipped.
  * data: AG News CSV (no header; "class","title","description"; label = class-1;
    text = title + " " + description); tokenised with truncation to --max-len, dynamic
    padding per batch (pad to the longest in the batch, like DataCollatorWithPadding).
    Training batches are grouped by length as HF Trainer's group_by_length=True groups them
    (transformers' LengthGroupedSampler, a new permutation every epoch from
    torch.Generator(seed), cut into consecutive batches); --no-group-by-length gives the old
    random order. Evaluation batches are rows sorted by length (as kd scores them).
  * attention: SDPA (--attn eager for the eager path).
  * threads: torch.set_num_threads(os.cpu_count()) (override with --threads).

Reported: trainable params (PEFT's count) and total params; train samples/s and
non-padding tokens/s over the training loop only (batch collation + H2D + forward +
backward + optimiser step; tokenisation and evaluation are excluded); eval samples/s;
test accuracy; wall time of the whole script. The last line of stdout is
`RESULT {json}` for the Rust-side harness.

How to run
----------
  .venv/bin/python bench/peer_train.py --model ../shared/models/all-MiniLM-L6-v2 \\
      --data ../shared/data/ag_news/split
  # quick sanity check (5 optimiser steps, whole test split still evaluated):
  .venv/bin/python bench/peer_train.py --model ../shared/models/all-MiniLM-L6-v2 --max-steps 5
  # on a GPU: add --device cuda (optionally --dtype bf16 for bf16 autocast)

For kd bench's speed comparison use bench/peer_hf.py (bench/side_by_side.py runs it).

Only torch, transformers, peft, safetensors, numpy and the standard library are used.
"""

import argparse
import math
import os
import platform
import sys
import time

WALL_T0 = time.perf_counter()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402  (sets the HF offline environment before torch/transformers)

import torch  # noqa: E402


# ---------------------------------------------------------------------------- model

def build_model(model_dir, num_labels, lora_r, lora_alpha, lora_dropout, attn_impl):
    from transformers import BertModel, RobertaModel

    config = pc.load_config(model_dir, num_labels)
    if config.model_type == "roberta":
        enc_cls = RobertaModel
    elif config.model_type == "bert":
        enc_cls = BertModel
    else:
        raise SystemExit(f"unsupported model_type {config.model_type!r} (bert or roberta)")
    load_kw = {"attn_implementation": attn_impl} if attn_impl else {}
    lora = pc.lora_kwargs(lora_r, lora_alpha, lora_dropout)
    return pc.encoder_head_lora(enc_cls, model_dir, config, lora, **load_kw), config


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(
        description="LoRA fine-tuning accuracy+speed peer for kd (PyTorch/transformers/PEFT).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--model", default="../shared/models/all-MiniLM-L6-v2", help="local BERT/RoBERTa folder")
    ap.add_argument("--data", default="../shared/data/ag_news/split", help="folder with train.csv.gz and test.csv.gz")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup-ratio", type=float, default=0.06)
    ap.add_argument("--max-len", type=int, default=128)
    pc.add_lora_args(ap)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                    help="f32, or bf16 autocast (weights stay f32)")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa | eager")
    ap.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=True,
                    help="HF Trainer's group_by_length (LengthGroupedSampler) for the training batches")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default os.cpu_count())")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    ap.add_argument("--limit-train", type=int, default=None, help="use only the first N training rows")
    ap.add_argument("--limit-test", type=int, default=None, help="use only the first N test rows")
    ap.add_argument("--log-every", type=int, default=20)
    args = ap.parse_args()

    threads, device = pc.setup_torch(args.threads, args.seed, args.device)
    autocast = pc.make_autocast(device, args.dtype)

    transformers, peft, banner = pc.versions()
    from transformers import get_cosine_schedule_with_warmup

    print(f"{banner}, device {device}, threads {threads}, dtype {args.dtype}")

    # ---- data + tokenisation (not timed as training)
    t = time.perf_counter()
    tr_texts, tr_labels = pc.read_ag_news(os.path.join(args.data, "train.csv.gz"), args.limit_train)
    te_texts, te_labels = pc.read_ag_news(os.path.join(args.data, "test.csv.gz"), args.limit_test)
    tok = pc.load_tokenizer(args.model)
    tr_feats = pc.tokenize(tok, tr_texts, args.max_len)
    te_feats = pc.tokenize(tok, te_texts, args.max_len)
    pad_id = tok.pad_token_id
    tok_s = time.perf_counter() - t
    print(f"data: {len(tr_feats)} train / {len(te_feats)} test rows, tokenised in {tok_s:.2f}s")

    # ---- model
    t = time.perf_counter()
    model, config = build_model(args.model, args.num_labels, args.lora_r, args.lora_alpha,
                                args.lora_dropout, args.attn)
    model.to(device)
    trainable, total = model.get_nb_trainable_parameters()
    load_s = time.perf_counter() - t
    print(f"model: {config.model_type} L={config.num_hidden_layers} H={config.hidden_size} "
          f"loaded in {load_s:.2f}s; trainable params {trainable:,} / total {total:,} "
          f"({100.0 * trainable / total:.3f}%)")

    # ---- optimiser + schedule
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    steps_per_epoch = math.ceil(len(tr_feats) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)
    warmup = math.ceil(args.warmup_ratio * total_steps)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=total_steps)
    print(f"schedule: {total_steps} steps ({steps_per_epoch}/epoch x {args.epochs}), warmup {warmup}, "
          f"batch {args.batch_size}, lr {args.lr}")

    # ---- training loop (timed)
    gen = torch.Generator().manual_seed(args.seed)
    tr_lens = [len(f["input_ids"]) for f in tr_feats]
    grouping = pc.LengthGrouping(tr_lens, args.batch_size, gen) if args.group_by_length else None
    model.train()
    step, seen, seen_tokens, padded_tokens = 0, 0, 0, 0
    loss_sum, loss_n, last_loss = 0.0, 0, float("nan")
    train_s = 0.0
    done = False
    for epoch in range(args.epochs):
        if grouping is not None:
            batches = grouping.epoch()
        else:
            order = torch.randperm(len(tr_feats), generator=gen).tolist()
            batches = [order[b:b + args.batch_size] for b in range(0, len(order), args.batch_size)]
        pc.sync(device)
        t_ep = time.perf_counter()
        for idx in batches:
            batch = pc.collate([tr_feats[i] for i in idx], pad_id, [tr_labels[i] for i in idx])
            seen_tokens += int(batch["attention_mask"].sum())
            padded_tokens += batch["attention_mask"].numel()
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast:
                loss, _ = pc.model_out(model(**batch))
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            seen += len(idx)
            if step % args.log_every == 0 or step == total_steps:
                last_loss = float(loss.detach())
                loss_sum += last_loss
                loss_n += 1
                el = train_s + time.perf_counter() - t_ep
                print(f"  epoch {epoch + 1} step {step}/{total_steps} loss {last_loss:.4f} "
                      f"lr {sched.get_last_lr()[0]:.2e} {seen / el:.1f} samples/s")
            if step >= total_steps:
                done = True
                break
        pc.sync(device)
        train_s += time.perf_counter() - t_ep
        if done:
            break
    train_sps = seen / train_s if train_s > 0 else float("nan")
    train_tps = seen_tokens / train_s if train_s > 0 else float("nan")
    print(f"train: {step} steps, {seen} samples in {train_s:.2f}s -> {train_sps:.2f} samples/s, "
          f"{train_tps:.0f} tokens/s; {seen_tokens} real / {padded_tokens} padded tokens "
          f"({grouping.source if grouping else 'random order'})")

    # ---- evaluation (timed separately)
    model.eval()
    correct = 0
    pc.sync(device)
    t = time.perf_counter()
    te_lens = [len(f["input_ids"]) for f in te_feats]
    with torch.inference_mode(), autocast:
        for idx in pc.sorted_plan(te_lens, range(len(te_feats)), args.eval_batch_size):
            batch = pc.collate([te_feats[i] for i in idx], pad_id)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            _, logits = pc.model_out(model(**batch))
            pred = logits.argmax(-1).cpu()
            gold = torch.tensor([te_labels[i] for i in idx])
            correct += int((pred == gold).sum())
    pc.sync(device)
    eval_s = time.perf_counter() - t
    acc = correct / len(te_feats)
    eval_sps = len(te_feats) / eval_s
    print(f"eval: {len(te_feats)} samples in {eval_s:.2f}s -> {eval_sps:.2f} samples/s; "
          f"accuracy {acc:.4f} ({correct}/{len(te_feats)})")

    wall_s = time.perf_counter() - WALL_T0
    print(f"wall time {wall_s:.2f}s")

    result = {
        "script": "peer_train",
        "model": os.path.abspath(args.model),
        "model_type": config.model_type,
        "device": str(device),
        "dtype": args.dtype,
        "attn": args.attn,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "n_train": len(tr_feats),
        "n_test": len(te_feats),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "warmup_steps": warmup,
        "max_len": args.max_len,
        "lora_r": args.lora_r,
        "lora_alpha": args.lora_alpha,
        "lora_dropout": args.lora_dropout,
        "seed": args.seed,
        "steps": step,
        "train_samples": seen,
        "train_tokens": seen_tokens,
        "train_padded_tokens": padded_tokens,
        "grouping": grouping.source if grouping else "random order",
        "cpu": pc.cpu_description(),
        "trainable_params": int(trainable),
        "total_params": int(total),
        "train_seconds": train_s,
        "train_samples_per_s": train_sps,
        "train_tokens_per_s": train_tps,
        "last_logged_loss": last_loss,
        "mean_logged_loss": (loss_sum / loss_n) if loss_n else float("nan"),
        "eval_seconds": eval_s,
        "eval_samples_per_s": eval_sps,
        "test_accuracy": acc,
        "tokenize_seconds": tok_s,
        "load_seconds": load_s,
        "wall_seconds": wall_s,
    }
    pc.emit_result(result)


if __name__ == "__main__":
    main()
