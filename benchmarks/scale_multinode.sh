#!/usr/bin/env bash
# Two Ray nodes on this machine (1 CPU each), one worker on each: the exchange crosses nodes.
# Needs the dataset benchmarks/scale.py makes: python -m benchmarks.scale --items 1000000 --users 200000 --out benchmarks/reports/scale-200k-users
set -u
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
DATA=runs/data/scale-u200000-i1000000-m20
ray stop --force >/dev/null 2>&1
ray start --head --num-cpus 1 --port 6390 --dashboard-port 8277 --object-store-memory 268435456 --disable-usage-stats >/dev/null 2>&1
ray start --address 127.0.0.1:6390 --num-cpus 1 --object-store-memory 268435456 >/dev/null 2>&1
ray status 2>/dev/null | grep -E "node_|CPU" | head -4
for mode in auto dense; do
  rm -rf runs/multinode-$mode
  /usr/bin/time -f "$mode wall %e s" python trainer/run.py --preset paper --sampler uniform --optimizer sparse-adam \
     --l2 0 --lr 0.01 --data $DATA --workers 2 --ray-address 127.0.0.1:6390 --epochs 1 --eval-users 5000 \
     --item-exchange $mode --out runs/multinode-$mode 2>&1 | grep -E "wall|^test|error" 
  python - <<PY
import json; m=json.load(open("runs/multinode-$mode/metrics.json")); e=m["epochs"][-1]
print("$mode", {k: m.get(k) for k in ("exchange_bytes_per_step","allreduce_bytes_per_step","sparse_step_fraction","steps_per_epoch")},
      "train_s", round(e["train_s"],1), "sample_s", round(e["sample_s"],1), "eval_s", round(e["eval_s"],1), "worker_peak_rss_mb", e["worker_peak_rss_mb"],
      "test_sample", {k: round(v,4) for k,v in e.get("test_sample",{}).get("ci95",{}).items() if k=="ndcg@50"}, e.get("test_sample",{}).get("users"))
PY
  ls runs/multinode-$mode/checkpoint | tr '\n' ' '; echo
done
ray stop --force >/dev/null 2>&1
