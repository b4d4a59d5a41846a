#!/usr/bin/env bash
cd "$(dirname "$0")"
export LD_LIBRARY_PATH="$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" IKV_REQUIRE_GPU=1
o=$OUT/r; mkdir -p $o
for f in rt_good rt_m1 rt_m2; do ./mut/$f > $o/$f.txt 2>&1; echo "rc=$?" >> $o/$f.txt; done
cd $OUT && tar czf r.tgz r && rm -rf r
