# One cuDNN SDPA decode (batch 1, 32 query heads, 8 KV heads, head_dim 128) at the given context, for a profiler.
import sys
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
ctx = int(sys.argv[1])
q = torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.float16)
k = torch.randn(1, 8, ctx, 128, device="cuda", dtype=torch.float16)
v = torch.randn(1, 8, ctx, 128, device="cuda", dtype=torch.float16)
with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
    for _ in range(3):
        F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push("measured")
    F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    torch.cuda.nvtx.range_pop()
    torch.cuda.synchronize()
