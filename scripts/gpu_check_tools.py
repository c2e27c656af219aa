#!/usr/bin/env python3
"""Helpers of scripts/gpu_check.sh, in the standard library alone (the dry run runs in CI, where
neither torch nor numpy is installed):

  accuracy ROLE SUMMARY REFERENCE DRY   test accuracy against the CPU f32 reference (goal 0.3 pt)
  same-run A B                          two run folders' adapter tensors and cached logits:
                                        the same bits, or how far apart
  bench KD_JSON PEER_JSON               kd bench against the peer: samples/s, peak memory, MFU
  record STEPS ASSETS DEVICE DRY        the JSON record of the whole check
"""
import json
import os
import platform
import struct
import subprocess
import sys

LOGITS_HEADER = 256  # cache::HEADER_LEN: logits.bin's header, then rows × classes f32


def accuracy(role, summary_path, reference_path, dry):
    acc = json.load(open(summary_path))["test_accuracy"]
    line = f"{role} test accuracy {100 * acc:.2f}%"
    if dry == "1":
        print(line + " (dry run: no reference)")
        return
    ref = json.load(open(reference_path))[role]
    gap = 100 * (acc - ref["test_accuracy"])
    verdict = "within" if abs(gap) <= 0.3 else "OUTSIDE"
    print(f"{line}, CPU f32 {100 * ref['test_accuracy']:.2f}%: {gap:+.2f} pt, {verdict} 0.3 pt")


def safetensors(path):
    """name -> (dtype, shape, raw bytes)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items()}


def max_abs_diff(a, b):
    xs = struct.unpack(f"<{len(a) // 4}f", a)
    ys = struct.unpack(f"<{len(b) // 4}f", b)
    return max((abs(x - y) for x, y in zip(xs, ys)), default=0.0)


def same_run(a, b):
    """The run ids differ (a rerun is a new run), so tensors and logits are compared, not files."""
    ta = safetensors(os.path.join(a, "adapter_model.safetensors"))
    tb = safetensors(os.path.join(b, "adapter_model.safetensors"))
    if ta.keys() != tb.keys():
        print(f"different tensors: {sorted(ta.keys() ^ tb.keys())}")
        return
    differing = [k for k in ta if ta[k][2] != tb[k][2]]
    worst = max((max_abs_diff(ta[k][2], tb[k][2]) for k in differing if ta[k][0] == "F32"),
                default=0.0)
    la = open(os.path.join(a, "logits.bin"), "rb").read()[LOGITS_HEADER:]
    lb = open(os.path.join(b, "logits.bin"), "rb").read()[LOGITS_HEADER:]
    logits = "logits the same bits" if la == lb else \
        f"logits differ (max |Δ| {max_abs_diff(la, lb):.3g})"
    if not differing:
        print(f"adapter the same bits ({len(ta)} tensors); {logits}")
    else:
        print(f"adapter: {len(differing)} of {len(ta)} tensors differ, max |Δ| {worst:.3g}; {logits}")


def bench(kd_path, peer_path):
    kd = json.load(open(kd_path))
    parts = [f"kd train {kd['train_samples_per_s']:.1f}/s cache {kd['cache_samples_per_s']:.1f}/s "
             f"MFU {100 * kd['train_mfu']:.1f}%"]
    if os.path.exists(peer_path):
        peer = json.load(open(peer_path))
        parts.append(f"peer train {peer['train_samples_per_s']:.1f}/s cache "
                     f"{peer['cache_samples_per_s']:.1f}/s")
        parts.append(f"ratio train {kd['train_samples_per_s'] / peer['train_samples_per_s']:.2f}x "
                     f"cache {kd['cache_samples_per_s'] / peer['cache_samples_per_s']:.2f}x")
        mem = (kd.get("peak_mem_bytes"), peer.get("peak_mem_bytes"))
        if all(mem):
            parts.append(f"peak memory {mem[0] / 2**20:.0f} vs {mem[1] / 2**20:.0f} MiB")
        pad = (kd.get("train_padded_tokens"), peer.get("train_padded_tokens"))
        if all(pad):
            parts.append(f"padded tokens {pad[0]} vs {pad[1]}")
    else:
        parts.append("no peer (torch not installed here)")
    print("; ".join(parts))


def gpu_name():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def record(steps_path, assets, device, dry):
    steps = [json.loads(line) for line in open(steps_path)]
    commit = None
    for path in (os.path.join(assets, "COMMIT"),):
        if os.path.exists(path):
            commit = open(path).read().strip()
    if commit is None:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.machine())
    print(json.dumps({
        "device": device, "dry_run": dry == "1", "gpu": gpu_name(), "cpu": cpu, "commit": commit,
        "failed": sum(s["status"] not in ("ok", "skipped") for s in steps), "steps": steps,
    }, indent=2))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"accuracy": accuracy, "same-run": same_run, "bench": bench, "record": record}[cmd](*args)
