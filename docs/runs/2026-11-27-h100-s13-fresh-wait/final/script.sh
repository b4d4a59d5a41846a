#!/usr/bin/env bash
# Session 13: the kept build (items wait before their first fresh page in one-wave launches).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH="$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
o=$OUT/r; mkdir -p $o
xz -d ikv_base.xz runtime_cuda_test_mutant2.xz; chmod +x ikv_base runtime_cuda_test_mutant2
nvidia-smi --query-gpu=name,driver_version --format=csv > $o/gpu.txt
./run.sh > $o/run.txt 2>&1; echo "run.sh rc=$?" >> $o/run.txt
IKV_REQUIRE_GPU=1 ./runtime_cuda_test_mutant2 > $o/mutant_one_late.txt 2>&1; echo "mutant rc=$?" >> $o/mutant_one_late.txt
for i in 1 2 3; do
  ./ikv bench step --part step --json > $o/new_step_$i.json 2>/dev/null
  ./ikv_base bench step --part step --json > $o/base_step_$i.json 2>/dev/null
done
for i in 1 2; do
  ./ikv bench decode --quick --json > $o/new_decode_$i.json 2>/dev/null
  ./ikv_base bench decode --quick --json > $o/base_decode_$i.json 2>/dev/null
done
CS=/usr/local/cuda/bin/compute-sanitizer
$CS --tool memcheck tests/runtime_cuda_test > $o/memcheck_runtime_cuda_test.log 2>&1; echo "rc=$?" >> $o/memcheck_runtime_cuda_test.log
$CS --tool memcheck tests/decode_cuda_test > $o/memcheck_decode_cuda_test.log 2>&1; echo "rc=$?" >> $o/memcheck_decode_cuda_test.log
timeout 200 $CS --tool racecheck tests/decode_cuda_test > $o/racecheck_decode_cuda_test.log 2>&1; echo "rc=$?" >> $o/racecheck_decode_cuda_test.log
./ikv demo --backend cuda > $o/demo_cuda.txt 2>&1; echo "rc=$?" >> $o/demo_cuda.txt
cd $OUT && tar czf r.tgz r && rm -rf r
