#!/usr/bin/env bash
# Session 13, final build: every GPU test, then each under memcheck; racecheck and synccheck on the kernel tests.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH="$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" IKV_REQUIRE_GPU=1
o=$OUT/r; mkdir -p $o
nvidia-smi --query-gpu=name,driver_version --format=csv > $o/gpu.txt
./run.sh > $o/run.txt 2>&1; echo "run.sh rc=$?" >> $o/run.txt
CS=/usr/local/cuda/bin/compute-sanitizer
for t in tests/*; do
  n=$(basename $t)
  timeout 200 $CS --tool memcheck $t > $o/memcheck_$n.log 2>&1; echo "rc=$?" >> $o/memcheck_$n.log
done
for n in decode_cuda_test quantize_cuda_test summary_cuda_test copy_cuda_test; do
  timeout 200 $CS --tool racecheck tests/$n > $o/racecheck_$n.log 2>&1; echo "rc=$?" >> $o/racecheck_$n.log
done
timeout 200 $CS --tool synccheck tests/decode_cuda_test > $o/synccheck_decode_cuda_test.log 2>&1; echo "rc=$?" >> $o/synccheck_decode_cuda_test.log
./ikv bench step --json > $o/step.json 2>$o/step.err
cd $OUT && tar czf r.tgz r && rm -rf r
