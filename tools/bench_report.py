#!/usr/bin/env python3
"""Joins `ikv bench decode --json` and `tools/bench_anchor.py --json` (measured
in the same run) into the markdown table docs/results.md records.
usage: bench_report.py decode.json anchor.json"""
import json
import sys


def main():
    ours = json.load(open(sys.argv[1]))
    anchor = json.load(open(sys.argv[2]))
    ref = {(r["batch"], r["context"], r["kv_heads"], r["backend"]): r for r in anchor["results"]}
    table = {}
    for r in ours["results"]:
        table.setdefault((r["batch"], r["context"], r["kv_heads"]), {})[r["variant"]] = r
    print(f"{ours['device']}, {ours['date']}: copy bandwidth {ours['copy_bandwidth_gbs']:.0f} GB/s (read + write); "
          f"anchor: PyTorch {anchor['torch']} SDPA on {anchor['device']}, same run.\n")
    print("Variant columns: speedup over our own dense fp16 time. Dependent: each layer's decode launched as a "
          "programmatic dependent of the layer before, its first pages in flight before it waits "
          "(ikv_cuda_plan.prefetch_pages); its speedups over its own dense time.\n")
    variants = ["dense_fp16", "fp8", "int8", "int4", "mix", "select_25", "select_12.5"]
    print("| batch | context | Hq/Hkv | KV MB (fp16) | cuDNN µs | flash µs | dense fp16 µs (GB/s, of copy) | cuDNN / ours | "
          + " | ".join(f"{v} ×" for v in variants[1:]) + " | dependent: dense µs | cuDNN / ours | "
          + " | ".join(f"{v} ×" for v in variants[1:]) + " |")
    print("|" + "---|" * (8 + 2 * len(variants)))
    for (batch, context, kv_heads), row in sorted(table.items(), key=lambda x: (x[0][2], x[0][0], x[0][1])):
        dense = row.get("dense_fp16", {})
        if "time_us" not in dense:
            print(f"| {batch} | {context} | 32/{kv_heads} | skipped: KV does not fit |")
            continue
        anchors = [ref.get((batch, context, kv_heads, b), {}) for b in ("cudnn", "flash")]
        shown = [str(a.get("time_us", a.get("error", a.get("skipped", "—")))) for a in anchors]
        cudnn = anchors[0].get("time_us")
        vs = f"{cudnn / dense['time_us']:.2f}" if cudnn else "—"
        cells = [f"{dense['time_us'] / row[v]['time_us']:.2f}" if "time_us" in row.get(v, {}) else "—"
                 for v in variants[1:]]
        dep = dense["dependent_us"]
        cells += [f"{dep:.2f}", f"{cudnn / dep:.2f}" if cudnn else "—"]
        cells += [f"{dep / row[v]['dependent_us']:.2f}" if "dependent_us" in row.get(v, {}) else "—"
                  for v in variants[1:]]
        print(f"| {batch} | {context} | 32/{kv_heads} | {dense['kv_bytes'] / 1e6:.1f} | {shown[0]} | {shown[1]} | "
              f"{dense['time_us']:.2f} ({dense['gbs']:.0f}, {dense['fraction_of_copy']:.2f}) | {vs} | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
