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
    padding per batch (pad to the longest in the batch, like DataCollatorWithPadding);
    training order reshuffled every epoch with torch.Generator(seed).
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

Only torch, transformers, peft, safetensors, numpy and the standard library are used.
"""

import argparse
import csv
import gzip
import json
import math
import os
import platform
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WALL_T0 = time.perf_counter()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402


# ----------------------------------------------------------------------------- data

def read_ag_news(path, limit=None):
    """Canonical AG News CSV (optionally gzipped): no header, "class","title","description"."""
    opener = gzip.open if str(path).endswith(".gz") else open
    texts, labels = [], []
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            cls, title, desc = row[0], row[1], row[2]
            texts.append(title + " " + desc)
            labels.append(int(cls) - 1)
            if limit is not None and len(texts) >= limit:
                break
    return texts, labels


def load_tokenizer(folder):
    """The folder's tokenizer.json (what kd reads) with the padding/truncation baked into it
    switched off (we truncate per call and pad per batch), wrapped as a transformers fast
    tokenizer."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    tk.no_padding()
    tk.no_truncation()
    if "[PAD]" in tk.get_vocab():
        special = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                       mask_token="[MASK]")
    else:
        special = dict(pad_token="<pad>", unk_token="<unk>", cls_token="<s>", sep_token="</s>",
                       bos_token="<s>", eos_token="</s>", mask_token="<mask>")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, **special)
    try:
        tok.backend_tokenizer.no_padding()
        tok.backend_tokenizer.no_truncation()
    except AttributeError:
        pass
    return tok


def tokenize(tok, texts, max_len):
    enc = tok(texts, truncation=True, max_length=max_len, padding=False)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    return [{k: enc[k][i] for k in keys} for i in range(len(texts))]


def collate(features, pad_id, labels=None):
    """Dynamic padding to the longest sequence in the batch (what DataCollatorWithPadding does)."""
    n = len(features)
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    tt = torch.zeros((n, width), dtype=torch.long) if "token_type_ids" in features[0] else None
    for i, f in enumerate(features):
        L = len(f["input_ids"])
        ids[i, :L] = torch.tensor(f["input_ids"], dtype=torch.long)
        mask[i, :L] = 1
        if tt is not None:
            tt[i, :L] = torch.tensor(f["token_type_ids"], dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": mask}
    if tt is not None:
        batch["token_type_ids"] = tt
    if labels is not None:
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
    return batch


# ---------------------------------------------------------------------------- model

class EncoderWithRobertaHead(nn.Module):
    """Encoder (no pooler) + RoBERTa classification head on the first token."""

    def __init__(self, encoder, config):
        super().__init__()
        from transformers.models.roberta.modeling_roberta import RobertaClassificationHead

        self.config = config
        self.encoder_model = encoder
        self.classifier = RobertaClassificationHead(config)
        std = getattr(config, "initializer_range", 0.02)
        for m in self.classifier.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=std)
                nn.init.zeros_(m.bias)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **_):
        kw = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        hidden = self.encoder_model(**kw).last_hidden_state
        logits = self.classifier(hidden)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        return loss, logits


def build_model(model_dir, num_labels, lora_r, lora_alpha, lora_dropout, attn_impl):
    from transformers import AutoConfig, BertModel, RobertaModel
    from peft import LoraConfig, get_peft_model

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    config.num_labels = num_labels
    if config.model_type == "roberta":
        enc_cls = RobertaModel
    elif config.model_type == "bert":
        enc_cls = BertModel
    else:
        raise SystemExit(f"unsupported model_type {config.model_type!r} (bert or roberta)")
    kwargs = dict(config=config, add_pooling_layer=False, dtype=torch.float32, local_files_only=True)
    if attn_impl:
        kwargs["attn_implementation"] = attn_impl
    encoder = enc_cls.from_pretrained(model_dir, **kwargs)
    model = EncoderWithRobertaHead(encoder, config).float()
    lcfg = LoraConfig(
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=["query", "value"],
        modules_to_save=["classifier"],
        bias="none",
    )
    return get_peft_model(model, lcfg), config


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
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--lora-alpha", type=float, default=32)
    ap.add_argument("--lora-dropout", type=float, default=0.1)
    ap.add_argument("--num-labels", type=int, default=4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                    help="f32, or bf16 autocast (weights stay f32)")
    ap.add_argument("--attn", default="eager", help="attn_implementation: eager | sdpa")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default os.cpu_count())")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    ap.add_argument("--limit-train", type=int, default=None, help="use only the first N training rows")
    ap.add_argument("--limit-test", type=int, default=None, help="use only the first N test rows")
    ap.add_argument("--log-every", type=int, default=20)
    args = ap.parse_args()

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    use_cuda = device.type == "cuda"

    def sync():
        if use_cuda:
            torch.cuda.synchronize(device)

    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if args.dtype == "bf16" else torch.autocast(device_type=device.type, enabled=False)
    )

    import transformers
    import peft
    from transformers import get_cosine_schedule_with_warmup

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
          f"device {device}, threads {threads}, dtype {args.dtype}")

    # ---- data + tokenisation (not timed as training)
    t = time.perf_counter()
    tr_texts, tr_labels = read_ag_news(os.path.join(args.data, "train.csv.gz"), args.limit_train)
    te_texts, te_labels = read_ag_news(os.path.join(args.data, "test.csv.gz"), args.limit_test)
    tok = load_tokenizer(args.model)
    tr_feats = tokenize(tok, tr_texts, args.max_len)
    te_feats = tokenize(tok, te_texts, args.max_len)
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
    model.train()
    step, seen, seen_tokens = 0, 0, 0
    loss_sum, loss_n, last_loss = 0.0, 0, float("nan")
    train_s = 0.0
    done = False
    for epoch in range(args.epochs):
        order = torch.randperm(len(tr_feats), generator=gen).tolist()
        sync()
        t_ep = time.perf_counter()
        for b in range(0, len(order), args.batch_size):
            idx = order[b:b + args.batch_size]
            batch = collate([tr_feats[i] for i in idx], pad_id, [tr_labels[i] for i in idx])
            seen_tokens += int(batch["attention_mask"].sum())
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast:
                loss, _ = model(**batch)
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
        sync()
        train_s += time.perf_counter() - t_ep
        if done:
            break
    train_sps = seen / train_s if train_s > 0 else float("nan")
    train_tps = seen_tokens / train_s if train_s > 0 else float("nan")
    print(f"train: {step} steps, {seen} samples in {train_s:.2f}s -> {train_sps:.2f} samples/s, "
          f"{train_tps:.0f} tokens/s")

    # ---- evaluation (timed separately)
    model.eval()
    correct = 0
    sync()
    t = time.perf_counter()
    with torch.no_grad(), autocast:
        for b in range(0, len(te_feats), args.eval_batch_size):
            feats = te_feats[b:b + args.eval_batch_size]
            batch = collate(feats, pad_id)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            _, logits = model(**batch)
            pred = logits.argmax(-1).cpu()
            gold = torch.tensor(te_labels[b:b + args.eval_batch_size])
            correct += int((pred == gold).sum())
    sync()
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
    print("RESULT " + json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
