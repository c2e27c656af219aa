"""kd vs HF transformers + PEFT at roberta-base's exact shape (issue: exactness, "the real shape").

Builds a randomly initialised RobertaForSequenceClassification of the real roberta-base shape
(hidden 768, 12 layers, 12 heads, FFN 3072, vocab 50265, 514 positions) with the real tokenizer
(../shared/models/roberta-base-tokenizer), wraps it in PEFT LoRA (r=8, α=32, query+value, head
trainable; lora_B set non-zero), runs it on the first 64 rows of ../shared/data/ag_news/test.csv.gz
as one padded batch, and compares logits and the gradients of every LoRA and head tensor
(cross-entropy, label smoothing 0.1) with kd's (examples/parity_dump.rs). Not run in CI (it needs
torch and ~2 GB).

    .venv/bin/python scripts/real_shape_parity.py [--device cpu|cuda] [--dtype f32|bf16] [--kd CMD]

--kd is the kd command (comma-separated words), default target/release/kd; on the GPU machine
pass target/cuda-dist/gpu-run.sh,target/cuda-dist/kd. Prints a JSON line `RESULT {...}` with the largest differences.
"""
import argparse, csv, gzip, json, os, shutil, subprocess, sys, tempfile
from pathlib import Path

import torch
from peft import LoraConfig, TaskType, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForSequenceClassification

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED", ROOT.parent / "shared"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--kd", default="target/release/kd")
    ap.add_argument("--work", default=None, help="folder for the model files (default: a temp dir)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="kd-real-shape-"))
    model_dir, adapter_dir = work / "model", work / "adapter"
    model_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                        pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
                        hidden_act="gelu", num_labels=4, attn_implementation="eager")
    model = RobertaForSequenceClassification(cfg).eval()
    cfg.to_json_file(str(model_dir / "config.json"))
    base = {k: v.contiguous() for k, v in model.state_dict().items() if k.startswith("roberta.")}
    save_file(base, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    tok_src = SHARED / "models" / "roberta-base-tokenizer"
    for f in ("tokenizer.json", "vocab.json", "merges.txt"):
        shutil.copyfile(tok_src / f, model_dir / f)

    pm = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=32,
                                          lora_dropout=0.1, target_modules=["query", "value"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(0.02 * torch.randn_like(p))
    pm.save_pretrained(str(adapter_dir))

    # kd first, so that the two never hold a roberta-base training graph in memory together.
    out = work / "kd_dump.safetensors"
    cmd = args.kd.split(",") + ["parity-dump", str(model_dir), str(adapter_dir), str(SHARED / "data/ag_news/test.csv.gz"),
                             str(args.rows), str(out), "--device", args.device, "--dtype", args.dtype]
    subprocess.run(cmd, check=True, cwd=ROOT)

    rows = []
    with gzip.open(SHARED / "data" / "ag_news" / "test.csv.gz", "rt", newline="") as f:
        for r in csv.reader(f):
            rows.append((r[1] + " " + r[2], int(r[0]) - 1))
            if len(rows) == args.rows:
                break
    tok = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"), bos_token="<s>",
                                  eos_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    enc = tok([t for t, _ in rows], truncation=True, max_length=128, padding="longest", return_tensors="pt")
    labels = torch.tensor([l for _, l in rows])

    dev = torch.device(args.device)
    pm.to(dev).eval()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    with torch.autocast(device_type=dev.type, dtype=dtype, enabled=args.dtype == "bf16"):
        logits = pm(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev)).logits
    loss = torch.nn.functional.cross_entropy(logits.float(), labels.to(dev), label_smoothing=0.1)
    loss.backward()
    ref = {"logits": logits.detach().float().cpu()}
    for n, p in pm.named_parameters():
        if p.requires_grad:
            key = n.replace(".default", "").replace("modules_to_save.", "")
            ref["grad." + key] = p.grad.detach().float().cpu()

    kd = load_file(str(out))
    assert torch.equal(kd["input_ids"], enc["input_ids"]), "token ids differ"
    report = {"rows": args.rows, "tokens": list(enc["input_ids"].shape), "device": args.device, "dtype": args.dtype,
              "max_abs_logit_diff": (kd["logits"] - ref["logits"]).abs().max().item(),
              "max_abs_logit": ref["logits"].abs().max().item()}
    worst, worst_rel = 0.0, 0.0
    for k, g in ref.items():
        if not k.startswith("grad."):
            continue
        d = (kd[k] - g).abs().max().item()
        worst = max(worst, d)
        worst_rel = max(worst_rel, d / max(g.abs().max().item(), 1e-30))
    report.update(max_abs_grad_diff=worst, max_rel_grad_diff=worst_rel,
                  grads_compared=sum(k.startswith("grad.") for k in ref))
    print(json.dumps(report, indent=2))
    print("RESULT " + json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
