#!/usr/bin/env bash
# Installs what building and testing intentkv needs, from Debian's packages.
# Idempotent: installs only what is missing; safe to run again.
set -euo pipefail

packages=(bazel-bootstrap libhwloc-dev hwloc libcmocka-dev gcc g++ python3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "setup: Debian packages present (${packages[*]})"
fi

# CUDA: nvcc compiles the kernels on every machine (no GPU needed to build);
# a GPU and its driver are needed only to run the CUDA backend and gpu tests.
cuda_home=${CUDA_HOME:-/usr/local/cuda}
if [ -x "$cuda_home/bin/nvcc" ]; then
  echo "setup: CUDA toolkit at $cuda_home ($("$cuda_home/bin/nvcc" --version | grep -o 'release [0-9.]*'))"
else
  echo "setup: MISSING CUDA toolkit: no nvcc at $cuda_home (set CUDA_HOME)." >&2
  echo "       The build compiles the CUDA kernels, so without nvcc nothing builds." >&2
  echo "       Install the CUDA Toolkit (13.0 is what intentkv is tested with)." >&2
  exit 1
fi
[ -f "$cuda_home/lib64/libcudart_static.a" ] || { echo "setup: MISSING $cuda_home/lib64/libcudart_static.a" >&2; exit 1; }
if ldconfig -p | grep -q libnccl.so.2 || [ -e "$cuda_home/lib64/libnccl.so.2" ]; then
  echo "setup: NCCL found (loaded at run time for multi-GPU sharding)"
else
  echo "setup: NCCL not found: builds fine; multi-GPU sharding is disabled at run time"
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: GPU present: run the gpu tests with 'bazel test --config=gpu //...'"
else
  echo "setup: no GPU here: CPU backend only; gpu-tagged tests run elsewhere (tools/gpu_bundle.sh)"
fi
