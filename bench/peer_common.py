"""peer_common.py -- code shared by the PyTorch peers bench/peer_hf.py and bench/peer_train.py.

Not a script. Both peers put this folder on sys.path and `import peer_common` before torch, so
the offline environment variables below are set before transformers is imported.

  * data: AG News CSV reading, tokenizer loading (the folder's tokenizer.json with its baked-in
    padding/truncation switched off), untimed tokenisation, dynamic-padding collation;
  * model: EncoderWithRobertaHead (encoder without pooler + RoBERTa classification head), the
    LoRA settings, encoder + head + PEFT LoRA building, unpacking of model outputs;
  * batching: HF Trainer's `group_by_length` grouping (transformers' own LengthGroupedSampler /
    get_length_grouped_indices) cut into batches as a DataLoader cuts them, and the caching
    pass's plan (rows sorted by length, as kd sorts it);
  * runtime: torch threads/seed/device set-up, device sync, peak-memory meters (CUDA's and the
    process's VmHWM), the CPU's description, autocast, version banner and the final
    `RESULT {json}` line.

Only torch, transformers, peft, tokenizers (pulled in by transformers) and the standard library
are used.
"""

import csv
import gzip
import json
import os
import platform
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402


# ----------------------------------------------------------------------------- data

def read_ag_news(path, limit=None):
    """Canonical AG News CSV (optionally gzipped): no header, "class","title","description".
    text = title + " " + description, label = class - 1; at most `limit` rows when given."""
    opener = gzip.open if str(path).endswith(".gz") else open
    texts, labels = [], []
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            texts.append(row[1] + " " + row[2])
            labels.append(int(row[0]) - 1)
            if limit is not None and len(texts) >= limit:
                break
    return texts, labels


def load_tokenizer(folder, with_token_types=None):
    """The folder's tokenizer.json (what kd reads) with the padding/truncation baked into it
    switched off (we truncate per call and pad per batch), wrapped as a transformers fast
    tokenizer (so DataCollatorWithPadding can pad with it).

    with_token_types: True/False sets model_input_names with/without token_type_ids; None
    keeps transformers' default."""
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
    if with_token_types is not None:
        special["model_input_names"] = (["input_ids", "token_type_ids", "attention_mask"] if with_token_types
                                        else ["input_ids", "attention_mask"])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, **special)
    try:  # make sure nothing re-enabled the baked settings
        tok.backend_tokenizer.no_padding()
        tok.backend_tokenizer.no_truncation()
    except AttributeError:
        pass
    return tok


def tokenize(tok, texts, max_len):
    """One feature dict (plain lists, unpadded) per text, truncated to max_len."""
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


def row_tensors(features):
    """Each row's input_ids as a LongTensor, made once outside the timed loops."""
    return [torch.tensor(f["input_ids"], dtype=torch.long) for f in features]


def pad_rows(rows, idx, pad_id):
    """(input_ids, attention_mask) for rows[idx], padded to the batch's own longest row (what
    DataCollatorWithPadding(padding="longest") does, without its per-row Python dict work)."""
    seqs = [rows[i] for i in idx]
    ids = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad_id)
    lens = torch.tensor([len(s) for s in seqs])
    mask = (torch.arange(ids.shape[1]).unsqueeze(0) < lens.unsqueeze(1)).long()
    return ids, mask


def _hf_length_grouped_indices(lengths, batch_size, mega_batch_mult=None, generator=None):
    """transformers.trainer_pt_utils.get_length_grouped_indices (transformers 5.24), copied for
    when transformers does not export it; hf_grouped_indices prefers the real one."""
    if mega_batch_mult is None:
        mega_batch_mult = min(len(lengths) // (batch_size * 4), 50)
        if mega_batch_mult == 0:
            mega_batch_mult = 1
    indices = torch.randperm(len(lengths), generator=generator)
    megabatch_size = mega_batch_mult * batch_size
    megabatches = [indices[i:i + megabatch_size].tolist() for i in range(0, len(lengths), megabatch_size)]
    megabatches = [sorted(m, key=lambda i: lengths[i], reverse=True) for m in megabatches]
    maxima = [lengths[m[0]] for m in megabatches]
    max_idx = torch.argmax(torch.tensor(maxima)).item()
    megabatches[0][0], megabatches[max_idx][0] = megabatches[max_idx][0], megabatches[0][0]
    return [i for m in megabatches for i in m]


class LengthGrouping:
    """HF Trainer's `group_by_length=True`: each epoch's index order comes from transformers'
    LengthGroupedSampler (random permutation, mega-batches of mega_batch_mult x batch_size rows
    each sorted by length, longest first, the longest row's batch first), cut into consecutive
    batches of batch_size as the Trainer's DataLoader cuts them (drop_last=False).

    mega_batch_mult None: the sampler's own choice, min(len // (4 * batch_size), 50). An int
    calls get_length_grouped_indices (the function the sampler calls) with it; 50 is kd's
    bucket of 50 batches. `source` says whose code ran."""

    def __init__(self, lengths, batch_size, generator, mega_batch_mult=None):
        self.lengths, self.batch_size, self.generator = list(lengths), batch_size, generator
        self.mega_batch_mult = mega_batch_mult
        try:
            from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
        except ImportError:
            LengthGroupedSampler, get_length_grouped_indices = None, _hf_length_grouped_indices
        if mega_batch_mult is None and LengthGroupedSampler is not None:
            self.sampler = LengthGroupedSampler(batch_size, lengths=self.lengths, generator=generator)
            self.source = "transformers LengthGroupedSampler"
        else:
            self.sampler = None
            self._fn = get_length_grouped_indices
            self.source = ("transformers get_length_grouped_indices" if LengthGroupedSampler is not None
                           else "copy of transformers' get_length_grouped_indices")
        self.effective_mult = mega_batch_mult or max(1, min(len(self.lengths) // (batch_size * 4), 50))

    def epoch(self):
        """One epoch's batches (lists of row indices), in the sampler's order."""
        if self.sampler is not None:
            order = list(iter(self.sampler))
        else:
            order = self._fn(self.lengths, self.batch_size, mega_batch_mult=self.mega_batch_mult,
                             generator=self.generator)
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]


def sorted_plan(lengths, rows, batch_size):
    """The caching pass's plan, as kd's eval_plan: rows sorted by (length, index), cut in order."""
    rows = sorted(rows, key=lambda i: (lengths[i], i))
    return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]


# ---------------------------------------------------------------------------- model

class EncoderWithRobertaHead(nn.Module):
    """Encoder (no pooler) + RoBERTa classification head on the first token.
    forward returns {"loss", "logits"} (loss None without labels); see model_out."""

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
        logits = self.classifier(self.encoder_model(**kw).last_hidden_state)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def model_out(out):
    """(loss, logits) from our head's dict or a transformers ModelOutput (a dict subclass)."""
    if isinstance(out, dict):
        return out.get("loss"), out.get("logits")
    return out.loss, out.logits


def add_lora_args(ap):
    """--lora-r --lora-alpha --lora-dropout --num-labels (same defaults in both peers)."""
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--lora-alpha", type=float, default=32)
    ap.add_argument("--lora-dropout", type=float, default=0.1)
    ap.add_argument("--num-labels", type=int, default=4)


def lora_kwargs(r, alpha, dropout):
    """LoraConfig arguments kd's recipe uses: LoRA on query and value, no bias training."""
    return dict(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=["query", "value"], bias="none")


def load_config(model_dir, num_labels):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    config.num_labels = num_labels
    return config


def encoder_head_lora(enc_cls, model_dir, config, lora, **load_kw):
    """enc_cls (BertModel / RobertaModel) from model_dir in float32 without pooler, plus the
    RoBERTa head, wrapped with PEFT LoRA (`lora` from lora_kwargs); the head stays fully
    trainable (modules_to_save=["classifier"]). load_kw go to from_pretrained."""
    from peft import LoraConfig, get_peft_model

    encoder = enc_cls.from_pretrained(model_dir, config=config, add_pooling_layer=False, dtype=torch.float32,
                                      local_files_only=True, **load_kw)
    model = EncoderWithRobertaHead(encoder, config).float()
    return get_peft_model(model, LoraConfig(modules_to_save=["classifier"], **lora))


# -------------------------------------------------------------------------- runtime

def setup_torch(threads, seed, device):
    """torch.set_num_threads(threads or os.cpu_count()), manual_seed(seed); returns (threads, device)."""
    threads = threads or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return threads, torch.device(device)


def sync(device):
    """Wait for queued device work (a no-op off CUDA), so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_allocated(device):
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def peak_reserved(device):
    # What the caching allocator held at its peak: comparable to kd's device-level meter.
    return int(torch.cuda.max_memory_reserved(device)) if device.type == "cuda" else None


def vm_hwm_bytes():
    """The process's peak resident memory so far (VmHWM of /proc/self/status, what kd bench
    reports on the CPU), in bytes; None where /proc is absent."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cpu_description():
    """The CPU model, its bf16 instructions (as kd bench's `cpu` field names them) and the
    vector ISA torch's CPU kernels dispatch to."""
    model, flags = platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == platform.machine():
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    yes = lambda f: "yes" if f in flags else "no"  # noqa: E731
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:
        cap = "unknown"
    return (f"{model}; avx512f {yes('avx512f')}, avx512_bf16 {yes('avx512_bf16')}, "
            f"amx_bf16 {yes('amx_bf16')}; torch CPU capability {cap}, "
            f"mkldnn bf16 {'yes' if _mkldnn_bf16() else 'no'}")


def _mkldnn_bf16():
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def make_autocast(device, dtype):
    """bf16 autocast for dtype "bf16" (and "bf16w": frozen weights stored in bf16), otherwise a
    disabled autocast context."""
    if dtype in ("bf16", "bf16w"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def versions():
    """(transformers, peft) modules and the "torch X, transformers Y, peft Z" banner."""
    import transformers
    import peft

    return transformers, peft, (f"torch {torch.__version__}, transformers {transformers.__version__}, "
                                f"peft {peft.__version__}")


def emit_result(result):
    """The last stdout line, parsed by the Rust-side harness and bench/side_by_side.py."""
    print("RESULT " + json.dumps(result))
    sys.stdout.flush()
