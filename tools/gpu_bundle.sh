#!/usr/bin/env bash
# Builds every `gpu`-tagged test and the ikv tool here, and packages them with
# what they need into gpu_bundle/ (git-ignored), so that one command runs them
# on a GPU machine that has no Bazel:
#   tools/gpu_bundle.sh            # here
#   gpu_bundle/run.sh              # there: runs every gpu test, then ikv info
#   gpu_bundle/bench.sh OUT_DIR    # there: ikv bench decode and the PyTorch anchor, same run
# The machine needs the CUDA driver (cudart is linked statically), hwloc and
# NCCL (loaded at run time); libcmocka travels in the bundle.
set -euo pipefail
cd "$(dirname "$0")/.."

tests=$(bazel query 'attr(tags, "\bgpu\b", tests(//...))' 2>/dev/null)
bazel build //tools:ikv $tests

rm -rf gpu_bundle
mkdir -p gpu_bundle/tests gpu_bundle/lib
cp -L bazel-bin/tools/ikv gpu_bundle/
for t in $tests; do
  path=${t#//}
  cp -L "bazel-bin/${path/://}" "gpu_bundle/tests/"
done
cp -L "$(ldconfig -p | awk '/libcmocka.so.0 /{print $NF; exit}')" gpu_bundle/lib/libcmocka.so.0
cp tools/bench_anchor.py tools/bench_report.py gpu_bundle/

cat > gpu_bundle/run.sh <<'RUN'
#!/usr/bin/env bash
# Runs every packaged gpu test (a missing GPU is a failure here, never a skip).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH="$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" IKV_REQUIRE_GPU=1
passed=0 failed=0
for t in tests/*; do
  echo "=== $t"
  if "$t"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $t"; fi
done
echo "=== ikv info"
./ikv info
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
RUN
chmod +x gpu_bundle/run.sh
cat > gpu_bundle/bench.sh <<'BENCH'
#!/usr/bin/env bash
# ikv bench decode and the PyTorch SDPA anchor on the same GPU in one run,
# joined into the markdown table for docs/results.md. usage: bench.sh OUT_DIR [--quick]
set -euo pipefail
cd "$(dirname "$0")"
out=${1:?usage: bench.sh OUT_DIR [--quick]}
shift
export LD_LIBRARY_PATH="$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
./ikv bench decode --json "$@" > "$out/decode.json"
python3 bench_anchor.py --json "$@" > "$out/anchor.json"
python3 bench_report.py "$out/decode.json" "$out/anchor.json" | tee "$out/decode_table.md"
BENCH
chmod +x gpu_bundle/bench.sh
echo "gpu_bundle/: $(ls gpu_bundle/tests | wc -l) gpu tests + ikv; run gpu_bundle/run.sh on a GPU machine"
