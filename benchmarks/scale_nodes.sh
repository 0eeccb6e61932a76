#!/usr/bin/env bash
# One epoch on a Ray cluster of N = 1, 2, 4 nodes started on this machine (`ray start`, 1 CPU
# each, one worker per node), item exchange auto, then a table of what metrics.json recorded.
# Needs: python -m benchmarks.scale --items 1000000 --users 200000 --out benchmarks/reports/scale-200k-users
set -u
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
DATA=runs/data/scale-u200000-i1000000-m20
OUT=${1:-benchmarks/reports/scale/nodes.md}
for n in 1 2 4; do
  ray stop --force >/dev/null 2>&1
  ray start --head --num-cpus 1 --port 6390 --dashboard-port 8277 --object-store-memory 268435456 \
      --disable-usage-stats >/dev/null 2>&1
  for _ in $(seq 2 "$n"); do
    ray start --address 127.0.0.1:6390 --num-cpus 1 --object-store-memory 268435456 >/dev/null 2>&1
  done
  rm -rf "runs/nodes-$n"
  start=$(date +%s.%N)
  python trainer/run.py --preset paper --sampler uniform --optimizer sparse-adam --l2 0 --lr 0.01 \
      --data "$DATA" --workers "$n" --ray-address 127.0.0.1:6390 --epochs 1 --eval-users 5000 \
      --out "runs/nodes-$n" >/dev/null 2>&1 || echo "N=$n failed"
  echo "$n $(echo "$(date +%s.%N) - $start" | bc)" >> "runs/nodes-wall.txt.$$"
done
ray stop --force >/dev/null 2>&1
python - "$OUT" "runs/nodes-wall.txt.$$" <<'PY'
import json, sys
out, walls = sys.argv[1], dict(line.split() for line in open(sys.argv[2]))
rows = ["| nodes = workers | bytes/step/worker | bytes/epoch/worker | steps | train s | eval s | wall s | peak RSS per worker (MB) |",
        "|---|---|---|---|---|---|---|---|"]
for n in ("1", "2", "4"):
    m = json.load(open(f"runs/nodes-{n}/metrics.json")); e = m["epochs"][-1]
    b = m["exchange_bytes_per_step"]
    rows.append(f"| {n} | {b:,} | {b * m['steps_per_epoch']:,} | {m['steps_per_epoch']} | {e['train_s']:.1f} | "
                f"{e['eval_s']:.1f} | {float(walls[n]):.0f} | {' / '.join(f'{x:,.0f}' for x in e['worker_peak_rss_mb'])} |")
head = ["# One epoch on 1, 2 and 4 Ray nodes (one worker each)", "", "```bash", "bash benchmarks/scale_nodes.sh", "```", "",
        "Nodes started with `ray start` on one 2-core machine, 1 CPU each (4 workers share 2 cores, so "
        "their times show overhead, not speed-up). 200,000 users × 910,396 items (~2.8 M train pairs), "
        "uniform BPR n = 5, lazy row-wise Adam, `--item-exchange auto`, 5,000 sampled users evaluated.", ""]
open(out, "w").write("\n".join(head + rows) + "\n")
print("\n".join(rows))
PY
rm -f "runs/nodes-wall.txt.$$"
