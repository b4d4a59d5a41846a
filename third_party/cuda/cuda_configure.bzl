"""Finds the CUDA toolkit (CUDA_HOME, else /usr/local/cuda) and exposes it as @local_cuda."""

def _cuda_configure_impl(ctx):
    home = ctx.os.environ.get("CUDA_HOME", "/usr/local/cuda")
    nvcc = ctx.path(home + "/bin/nvcc")
    if not nvcc.exists:
        fail("CUDA toolkit not found at %s (set CUDA_HOME): nvcc is needed to build the kernels; run tools/setup.sh" % home)
    ctx.symlink(home + "/include", "include")
    ctx.symlink(home + "/lib64", "lib64")
    ctx.file("defs.bzl", 'NVCC = "%s"\nCUDA_HOME = "%s"\n' % (nvcc, home))
    ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "cuda_headers",
    hdrs = glob(["include/**/*.h", "include/**/*.hpp"]),
    includes = ["include"],
)

cc_library(
    name = "cudart_static",
    srcs = ["lib64/libcudart_static.a"],
    linkopts = ["-ldl", "-lpthread", "-lrt"],
    deps = [":cuda_headers"],
)
""")

cuda_configure = repository_rule(
    implementation = _cuda_configure_impl,
    environ = ["CUDA_HOME"],
    local = True,
)
