#!/usr/bin/env python3
"""The anchor for `ikv bench decode`: PyTorch SDPA decode (cuDNN and flash
backends) over contiguous dense fp16 KV, on the same shapes, timed the same
way (CUDA-graph replays, median; small caches rotate over several layers' KV
so no replay reads from L2). Prints one JSON object (--json) or a table."""
import json
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

D, HQ, REPLAYS = 128, 32, 30
ARENA = 40 << 30
ROTATE = 512 << 20
BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}


def time_config(batch, context, kv_heads, backend):
    kv_bytes = 2 * batch * kv_heads * context * D * 2
    layers = max(1, min(16, -(-ROTATE // kv_bytes)))
    if kv_bytes * layers > ARENA:
        return {"skipped": "KV does not fit"}
    q = torch.randn(batch, HQ, 1, D, device="cuda", dtype=torch.float16)
    kv = [(torch.randn(batch, kv_heads, context, D, device="cuda", dtype=torch.float16),
           torch.randn(batch, kv_heads, context, D, device="cuda", dtype=torch.float16)) for _ in range(layers)]
    gqa = kv_heads != HQ
    try:
        with sdpa_kernel([BACKENDS[backend]]):
            for k, v in kv:  # warm-up, and the backend must accept the shape
                F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
            torch.cuda.synchronize()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                for k, v in kv:
                    F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
    except RuntimeError as e:
        return {"error": str(e).splitlines()[0][:160]}
    samples = []
    for r in range(REPLAYS + 3):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        if r >= 3:
            samples.append(a.elapsed_time(b) * 1e3 / layers)
    us = statistics.median(samples)
    del kv, graph
    torch.cuda.empty_cache()
    return {"time_us": round(us, 2), "kv_bytes": kv_bytes, "gbs": round(kv_bytes / (us * 1e-6) / 1e9, 1)}


def flag_values(name, default):
    """The comma-separated integers after flag `name`, else default."""
    if name not in sys.argv:
        return default
    at = sys.argv.index(name) + 1
    if at >= len(sys.argv):
        sys.exit(f"bench_anchor.py: {name} needs a value")
    try:
        values = tuple(int(x) for x in sys.argv[at].split(","))
    except ValueError:
        sys.exit(f"bench_anchor.py: {name} takes integers, not {sys.argv[at]!r}")
    if any(v <= 0 for v in values):
        sys.exit(f"bench_anchor.py: {name} takes positive integers")
    return values


def main():
    as_json = "--json" in sys.argv
    quick = "--quick" in sys.argv
    heads_list = flag_values("--kv-heads", (8, 32))
    batches = flag_values("--batch", (1, 8, 32))
    contexts = flag_values("--context", (4096, 16384, 32768, 65536, 131072))
    if any(HQ % h for h in heads_list):
        sys.exit(f"bench_anchor.py: --kv-heads must divide {HQ}")
    rows = []
    for kv_heads in heads_list:
        for batch in batches:
            for context in contexts:
                if quick and (batch == 32 or context not in (4096, 32768)):
                    continue
                for backend in BACKENDS:
                    r = {"batch": batch, "context": context, "kv_heads": kv_heads, "backend": backend}
                    r.update(time_config(batch, context, kv_heads, backend))
                    rows.append(r)
                    if not as_json:
                        print(r, flush=True)
    if as_json:
        print(json.dumps({"anchor": "torch_sdpa", "device": torch.cuda.get_device_name(0),
                          "torch": torch.__version__, "results": rows}))


if __name__ == "__main__":
    main()
