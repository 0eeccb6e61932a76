"""docs/'s commands executed, in the order the guides give them, in a fresh directory: the
bash blocks of docs/data.md, docs/ray.md, docs/service.md and docs/tune.md become one script
with a real `ray start` head, `ray job submit`, uvicorn and curl.

What the script changes is said here and nowhere else: MovieLens-1M's file is a 300-user
sample of it (a synthetic file in its format where ../shared is absent), epochs are 2, the
service listens on a free port and the script waits for it, polls the job it submitted,
runs docs/tune.md after `ray stop` (its note says what a running head needs), before it the
prose's `adasir recommend --model ...` commands on data.md's model, and stops Ray at the end; the two large Tune searches are validated, not run (hours on 2 cores).
Benchmark commands run in tests/test_reports.py and tests/test_service*.py.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import shutil

import pytest
from conftest import ROOT, ports_in_use
from test_readme import code_blocks, run_bash_script
from test_tune import check_tiny_search

from service.devserver import free_port

ML1M = os.path.join(ROOT, "..", "shared", "data", "ml-1m", "ml-1m.inter.gz")
GUIDES = ["data.md", "ray.md", "service.md", "tune.md"]


def _ml1m_sample(path: str, users: int = 300) -> None:
    """The first `users` users' lines of ML-1M's .inter file, or a synthetic file like it."""
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    lines = []
    if os.path.isfile(ML1M):
        with gzip.open(ML1M, "rt", encoding="utf-8") as fh:
            header = next(fh)
            for line in fh:
                if int(line.split("\t")[0][3:]) > users:
                    break
                lines.append(line)
    else:
        import random

        rng = random.Random(0)
        for u in range(1, users + 1):
            for i in rng.sample(range(400), 40):
                lines.append(f"1m_{u}\tMovie {i} (1990)\t{rng.randint(1, 5)}\t{978300000 + i}\n")
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(header + "".join(lines))


def _guide_commands() -> list[str]:
    """Every bash line of the guides, continuation lines joined, comments dropped."""
    lines = []
    for name in GUIDES:
        for block in code_blocks(os.path.join(ROOT, "docs", name), "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("  #")[0].strip()
                if line:
                    lines.append(" ".join(line.split()))
    return lines


def _inline_commands() -> list[str]:
    """`adasir recommend --model ...` spans in the guides' prose (a span may wrap lines)."""
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        text = open(path, encoding="utf-8").read().replace("```", "")
        for span in re.findall(r"`([^`]+)`", text):
            span = " ".join(span.split())
            if span.startswith("adasir recommend --model "):
                found.append(span)
    return found


def _script(
    commands: list[str], inline: list[str], sample: str, port: int
) -> tuple[str, list[str]]:
    """The guides' commands as one bash script (the changes in this module's docstring), and
    the Tune configs left out of it."""
    # On any exit, the server started in the background goes too (its open stdout would keep
    # the test waiting).
    out = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    validated = []
    for cmd in commands:
        cmd = cmd.replace("../shared/data/ml-1m/ml-1m.inter.gz", sample)
        cmd = re.sub(r"--epochs \d+", "--epochs 2", cmd)
        cmd = re.sub(r'"epochs": \d+', '"epochs": 2', cmd).replace(
            "localhost:8000", f"localhost:{port}"
        )
        if cmd.startswith("python -m benchmarks."):
            continue
        if cmd.startswith("adasir tune ") and "tiny.yaml" not in cmd:
            validated.append(cmd.split()[2])
            continue
        if cmd.startswith("adasir tune "):  # its dataset, as the config's own comment says
            if "ray stop" not in out:  # a fresh shell: docs/tune.md on a running head
                out.append("ray stop")
                # The prose's `adasir recommend` lines, on data.md's model (the quickstart's
                # runs/models/demo is not made here).
                out += [c.replace("runs/models/demo", "runs/ml1m-adasir") for c in inline]
            out.append(
                "adasir prepare --synthetic users=600,items=400,mean=25,seed=1 --out runs/data/tiny"
            )
        if "adasir train" in cmd and "--epochs" not in cmd:
            cmd += " --epochs 2"
        if cmd.endswith("uvicorn service.app:app"):
            out += [
                f"{cmd} --port {port} &",
                f"until curl -sf localhost:{port}/readyz >/dev/null; do sleep 1; done",
            ]
            continue
        if cmd.startswith("curl -X POST") and "/jobs" in cmd:
            out += [f"JOB=$({cmd})", 'echo "job: $JOB"', _wait_for_job(port)]
            continue
        out.append(cmd)
    return "\n".join(out + ["ray stop"]) + "\n", validated


def _wait_for_job(port: int) -> str:
    """Bash: poll GET /jobs/ID until the job ends; fail unless it SUCCEEDED."""
    job_id = '$(python -c \'import json,sys; print(json.load(sys.stdin)["id"])\' <<<"$JOB")'
    status = (
        f"curl -s localhost:{port}/jobs/$ID -H 'Authorization: Bearer secret' | python -c "
        "'import json,sys; print(json.load(sys.stdin)[\"status\"])'"
    )
    return (
        f"ID={job_id}\n"
        f'while S=$({status}); [ "$S" = PENDING ] || [ "$S" = RUNNING ]; do sleep 2; done\n'
        'echo "job status: $S"; [ "$S" = SUCCEEDED ]'
    )


@pytest.mark.slow
@pytest.mark.ray
def test_the_guides_commands_run_in_order(tmp_path):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    busy = ports_in_use(6379, 8265)  # the guides start Ray on its default ports
    if busy:
        pytest.skip(f"ports {busy} are in use on this host: the guides' Ray would not start")
    sample = str(tmp_path / "ml-1m-sample.inter.gz")
    _ml1m_sample(sample)
    shutil.copytree(os.path.join(ROOT, "tune_configs"), tmp_path / "tune_configs")
    script, validated = _script(_guide_commands(), _inline_commands(), sample, free_port())
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env.update(RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    returncode, out = run_bash_script(script, tmp_path, env, timeout=900)
    assert returncode == 0, f"{script}\n---\n{out[-4000:]}"
    runs = tmp_path / "runs"
    for run in ("ml1m-adasir", "ray-n2", "job"):  # data.md, ray.md, ray.md's job
        assert (runs / run / "checkpoint" / "model.pt").is_file(), run
    job = json.loads((runs / "job" / "metrics.json").read_text())
    assert job["workers"] == 2 and "test" in job
    tailed = out[out.index("Tailing logs until the job exits") :]
    assert "epoch 2/2 loss" in tailed[: tailed.index("succeeded")]  # progress reaches the logs
    assert len(_inline_commands()) >= 3 and '"user": "1m_1"' in out  # training.md's query
    assert (tmp_path / "recs.parquet").is_file() and list((tmp_path / "recs").glob("*.parquet"))
    assert "job status: SUCCEEDED" in out  # service.md's POST /jobs, run on the head
    assert '"model":"jobs/' in out.replace(" ", "") and '"user":"1m_1"' in out.replace(" ", "")
    check_tiny_search(runs / "tune" / "tiny", runs)  # docs/tune.md's search
    from trainer.distributed.tune import load_spec

    assert validated == ["tune_configs/paper_l2_grid.yaml", "tune_configs/pool_size_sweep.yaml"]
    for config in validated:
        load_spec(os.path.join(ROOT, config))  # the whole YAML, as before Ray starts
