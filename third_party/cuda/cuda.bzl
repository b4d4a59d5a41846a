"""cuda_library: CUDA sources compiled by nvcc into a cc_library that cc_* targets link.

Each .cu becomes one object through a genrule (nvcc needs no Bazel toolchain that
way); the objects land in a cc_library together with the static CUDA runtime.
"""

load("@local_cuda//:defs.bzl", "NVCC")

# Hopper SASS plus compute_90 PTX so newer GPUs can JIT it.
CUDA_ARCH_FLAGS = "-gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90"
CUDA_ARCHS = "sm_90a,compute_90"

def cuda_library(name, srcs, hdrs = [], cuda_hdrs = [], deps = [], nvcc_flags = "", **kwargs):
    """srcs: .cu files; hdrs: headers this library exports; cuda_hdrs: other headers the .cu include."""
    objs = []
    for src in srcs:
        obj = "_%s_%s.o" % (name, src.replace("/", "_").replace(".cu", ""))
        native.genrule(
            name = obj.replace(".", "_"),
            srcs = [src] + hdrs + cuda_hdrs,
            outs = [obj],
            cmd = "%s -c -std=c++17 -O3 -lineinfo %s %s -Xcompiler -fPIC,-Wall -I. -o $@ $(location %s)" % (
                NVCC,
                CUDA_ARCH_FLAGS,
                nvcc_flags,
                src,
            ),
            local = 1,
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        deps = deps + ["@local_cuda//:cudart_static"],
        **kwargs
    )
