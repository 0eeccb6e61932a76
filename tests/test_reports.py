"""Every report script end to end on tiny synthetic data: a Markdown table and a PNG each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

REPORTS = {
    "table2": [
        "--models",
        "mf,gmf",
        "--samplers",
        "uniform,adasir-u",
        "--epochs",
        "2",
        "--l2-grid",
        "0.01,0.001",
        "--tau-grid",
        "2",
        "--seeds",
        "0,1",
        "--batch-size",
        "1024",
        "--contenders",
        "bpr+dns,softmax+shared1000+cosine",
    ],
    "timing": [
        "--samplers",
        "uniform,adasir-u,kernel,irgan",
        "--epochs",
        "1",
        "--batch-size",
        "1024",
    ],
    "softmax_fit": [
        "--epochs",
        "15",
        "--users",
        "2",
        "--draws",
        "2000",
        "--samplers",
        "uniform,dns,adasir-u,adasir-p,kernel,softmax",
    ],
    "pool_sweep": ["--samplers", "adasir-u,adasir-w", "--sizes", "20,50", "--epochs", "2"],
    "convergence": ["--samplers", "uniform,adasir-u", "--epochs", "3"],
    "ablation": ["--epochs", "2", "--seeds", "0", "--batch-size", "1024"],
    "irgan_diagnostic": ["--epochs", "2", "--batch-size", "1024"],
    "reference_models": [
        "--ease-lambdas",
        "10,100",
        "--ials-alpha0",
        "0.1",
        "--ials-lambda",
        "0.01,0.1",
        "--iterations",
        "2",
        "--eval-every",
        "1",
        "--seeds",
        "0,1",
        "--threads",
        "1",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("report", sorted(REPORTS))
def test_report_runs_end_to_end(report, tiny_data, tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            f"benchmarks.{report}",
            "--data",
            tiny_data,
            "--out",
            str(out),
            *REPORTS[report],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / f"{report}.md").read_text()
    png = out / f"{report}.png"
    assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "```bash\npython " in md and "|---|" in md and f"({report}.png)" in md
    if report == "table2":  # a contender that needs more items than the data has says so
        assert (
            "| bpr+dns |" in md
            and "softmax+shared1000+cosine (not applicable: --negatives 1000" in md
        )
    if report == "softmax_fit":
        rows = {
            line.split("|")[1].strip(): float(line.split("|")[2])
            for line in md.splitlines()
            if line.startswith("| ") and not line.startswith("| sampler")
        }
        # A trained model's softmax is peaked: the exact sampler and AdaSIR's pools follow it,
        # uniform does not, and DNS (a max, not a softmax) overshoots it.
        assert rows["softmax"] < 0.5 * rows["uniform"] and rows["adasir-u"] < 0.6 * rows["uniform"]
        assert rows["dns"] > rows["uniform"]


def _run_script(name, tiny_data, out, *args):
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--data", tiny_data, "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _train(tiny_data, out, *args) -> dict:
    """`adasir train` on the tiny set on one thread; returns its metrics.json."""
    done = subprocess.run(
        [sys.executable, "-m", "adasir", "train", "--data", tiny_data, "--threads", "1"]
        + [*args, "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def _assert_usage_error(cmd: list[str], message: str) -> None:
    """`cmd` exits with a one-line usage error (code 2) that says `message`."""
    bad = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert bad.returncode == 2 and message in bad.stderr, bad.stderr[-3000:]


@pytest.mark.slow
def test_quiet_machine_scripts_read_table2s_cache(tiny_data, tmp_path):
    """contender_timing and sampler_profile time what Table 2 tuned (they train nothing new
    for the choice) and write their tables."""
    out = tmp_path / "report"
    # Table 2's own protocol (20 epochs, batch 4096), which these scripts read the cache under.
    _run_script(
        "table2",
        tiny_data,
        out,
        "--models",
        "mf",
        "--samplers",
        "uniform",
        "--l2-grid",
        "0.001",
        "--tau-grid",
        "",
        "--seeds",
        "0,1",
        "--contenders",
        "bpr+dns",
    )
    _run_script(
        "contender_timing",
        tiny_data,
        out,
        "--contenders",
        "bpr+dns",
        "--epochs",
        "2",
        "--threads",
        "1",
        "--report",
        "timing-dns",
    )
    md = (out / "timing-dns.md").read_text()
    rows = [
        line for line in md.splitlines() if line.startswith("| ") and "configuration" not in line
    ]
    assert [r.split(" | ")[0] for r in rows] == [
        "| uniform BPR (adasir's baseline)",
        "| adasir-u (the paper)",
        "| bpr+dns",
    ]
    assert rows[0].endswith("| 1.00 |") and "interleaved rounds" in md
    _run_script(
        "sampler_profile",
        tiny_data,
        out,
        "--contender",
        "bpr+dns",
        "--warmup",
        "1",
        "--threads",
        "1",
    )
    md = (out / "sampler_profile-bpr+dns.md").read_text()
    assert "First draws that were the user's own train items" in md and "aten::" in md


@pytest.mark.slow
def test_public_benchmark_and_implicit_reference_run_end_to_end(tiny_data, tmp_path):
    """The public benchmark trains through trainer/run.py, caches each run, and a second call
    trains nothing; implicit's reference models are scored by the engine's evaluator."""
    out = tmp_path / "report"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bench = [
        sys.executable,
        "-m",
        "benchmarks.public_benchmark",
        "--data",
        tiny_data,
        "--out",
        str(out),
        "--contenders",
        "default",
        "--seeds",
        "0,1",
    ]
    proc = subprocess.run(bench, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = (out / "runs.jsonl").read_text().splitlines()
    assert len(runs) == 2
    md = (out / "report.md").read_text()
    assert "| default | – | 2 |" in md and "Not yet measured" not in md
    assert (out / "recall20_vs_seconds.png").read_bytes()[:4] == b"\x89PNG"
    again = subprocess.run(
        [*bench, "--report-only"], capture_output=True, text=True, timeout=120, env=env
    )
    assert again.returncode == 0 and (out / "runs.jsonl").read_text().splitlines() == runs
    ref = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.implicit_reference",
            "--data",
            tiny_data,
            "--out",
            str(out),
            "--models",
            "als",
            "--seeds",
            "0",
            "--threads",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert "| implicit ALS, d = 64 |" in (out / "implicit_reference.md").read_text()


@pytest.mark.slow
def test_time_to_quality_and_the_recipe_sweep_write_their_reports(tiny_data, tmp_path):
    """Both benchmarks run end to end on a tiny set: the curves reach the report
    with a row per trainer, and the sweep writes one JSON line per finished variant."""
    out = tmp_path / "ttq"
    _run_script(
        "time_to_quality",
        tiny_data,
        out,
        "--dim",
        "8",
        "--trainers",
        "bpr-uniform",
        "--rounds",
        "1",
        "--threads",
        "1",
        "--implicit",
        "als",
    )
    md = (out / "time_to_quality_cpu.md").read_text()
    assert (
        "| bpr-uniform |" in md
        and "| implicit-als |" in md
        and (out / "time_to_quality_cpu.png").exists()
    )
    sweep = tmp_path / "sweep"
    _run_script(
        "recipe_sweep",
        f"{tiny_data}:8",  # its --data is PATH:DIM
        sweep,
        "--variants",
        "base,batch512",
        "--workers",
        "2",
        "--budget-s",
        "60",
    )
    rows = [json.loads(line) for line in (sweep / "sweep.jsonl").read_text().splitlines()]
    assert sorted(r["variant"] for r in rows) == ["base", "batch512"]
    assert all(r["curve"] and 0 < r["valid"]["recall@20"] <= 1 for r in rows)
    seconds = [[c[2] for c in r["curve"]] for r in rows]  # (epoch, recall, seconds so far)
    assert all(s[0] > 0 and s == sorted(s) for s in seconds)
    assert "![validation against seconds](sweep.png)" in (sweep / "sweep.md").read_text()
    assert (sweep / "sweep.png").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_the_export_benchmark_runs_on_a_ray_node(tiny_data, tmp_path):
    """benchmarks/export_nodes.py on one `ray start` node: both rows, the actor's memory."""
    from trainer.api import fit

    fit(tiny_data, dim=8, epochs=1, refit=False, out=tmp_path / "m")
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.export_nodes", "--model", str(tmp_path / "m")]
        + ["-k", "5", "--nodes", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / "export_nodes.md").read_text()
    assert "| in process |" in md and "| Ray Data, 1 node(s) |" in md
    ray_row = next(line for line in md.splitlines() if "Ray Data, 1 node" in line)
    assert ray_row.split("|")[-2].strip() not in ("", "—")  # the actor's peak was read


@pytest.mark.slow
def test_the_ann_benchmark_runs_with_seen_items_near_the_top(tmp_path):
    """benchmarks/ann.py on 5,000 items, the masked items drawn from each user's exact top
    100: the report's recall (HNSW finds all of so small a catalogue) and both latency rows."""
    args = [sys.executable, "-m", "benchmarks.ann", "--items", "5000", "--queries", "50"]
    args += ["--requests", "40", "--clients", "2", "--seen", "10", "--seen-near"]
    proc = subprocess.run(
        [*args, "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "ann.md").read_text()
    recall = float(md.split("against exact: **")[1].split("**")[0])
    assert recall >= 0.95 and "10 seen items each (from their exact top 100)" in md
    assert "| HNSW (M 32) | 40 |" in md and "| exact, blockwise |" in md
    bad = subprocess.run(
        [*args[:-3], "--seen", "101", "--seen-near", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert bad.returncode != 0 and "at most 100" in bad.stderr


@pytest.mark.slow
def test_the_epoch_time_benchmark_interleaves_its_rounds(tiny_data, tmp_path):
    """benchmarks/epoch_time.py with 2 rounds: every sampler timed once a round, A B then A B,
    and the table gives each the median and the range."""
    out = tmp_path / "epoch_time.md"
    args = [sys.executable, "-m", "benchmarks.epoch_time", "--data", tiny_data, "--threads", "1"]
    args += ["--samplers", "uniform,adasir-u", "--epochs", "1", "--rounds", "2"]
    proc = subprocess.run(
        [*args, "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rounds = [line for line in proc.stdout.splitlines() if line.startswith("round ")]
    order = [line.split(": ")[1].split()[0] for line in rounds]
    assert order[:4] == ["uniform", "adasir-u", "uniform", "adasir-u"]
    md = out.read_text()
    assert "median (range) of 2 interleaved rounds" in md
    row = next(line for line in md.splitlines() if line.startswith("| adasir-u |"))
    assert "–" in row.split("|")[5]  # the epoch cell: median (min–max)
    _assert_usage_error([*args[:-2], "--rounds", "0"], "--rounds and --epochs must be at least 1")


@pytest.mark.slow
def test_the_kernels_benchmark_times_every_operation(tiny_data, tmp_path):
    """benchmarks/kernels.py on the tiny set, one batch each: a row per operation, each a
    positive time; --repeats 0 is a usage error."""
    args = [sys.executable, "-m", "benchmarks.kernels", "--data", tiny_data, "--threads", "1"]
    proc = subprocess.run(
        [*args, "--repeats", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in (tmp_path / "kernels.md").read_text().splitlines() if "| " in line]
    times = [float(line.split("|")[2]) for line in rows[1:]]  # after the header
    assert len(times) == 13 and all(t > 0 for t in times)
    _assert_usage_error(
        [*args, "--repeats", "0", "--out", str(tmp_path)], "--repeats must be at least 1"
    )


@pytest.mark.slow
def test_pool_diagnostics_tabulate_validation_beside_the_pools_statistics(tiny_data, tmp_path):
    """benchmarks/pool_diagnostics.py with --eval-every 1: a row per epoch for each config,
    each with its validation NDCG@50, and AdaSIR's rows with its pool's statistics."""
    args = [sys.executable, "-m", "benchmarks.pool_diagnostics", "--data", tiny_data]
    args += ["--out", str(tmp_path), "--epochs", "2", "--eval-every", "1"]
    proc = subprocess.run(
        [*args, "--configs", "uniform,adasir-u"], capture_output=True, text=True, cwd=ROOT,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sections = (tmp_path / "pool_diagnostics.md").read_text().split("\n## ")[1:]
    assert [s.split(":")[0] for s in sections] == ["uniform", "adasir-u"]
    for text in sections:
        rows = [
            r.split("|") for r in text.splitlines() if r.startswith("| 1 ") or r.startswith("| 2 ")
        ]
        assert len(rows) == 2 and all(0 < float(r[2]) <= 1 for r in rows)  # valid NDCG@50
    adasir_rows = [r for r in sections[1].splitlines() if r.startswith("| 2 ")]
    assert "–" not in adasir_rows[0]  # ESS, distinct entries and staleness are all there


def test_the_authors_code_benchmark_refuses_what_it_cannot_run(tiny_data, tmp_path):
    """benchmarks/authors_code.py: a --code without the authors' files, or a sampler their
    code has no counterpart for, is a one-line usage error, and no report is written."""
    args = [sys.executable, "-m", "benchmarks.authors_code", "--data", tiny_data]
    args += ["--out", str(tmp_path / "out")]
    _assert_usage_error([*args, "--code", str(tmp_path)], "no model.py and sampler.py there")
    _assert_usage_error([*args, "--code", str(tmp_path), "--samplers", "dns"], "unknown sampler")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_step_profile_sums_an_epoch_into_products_compiled_code_and_the_rest(
    tiny_data, tmp_path
):
    """benchmarks/step_profile.py, eager and compiled: a section per run whose listed
    operators' shares are at most the whole, and the compiled run shows its graph's code."""
    out = tmp_path / "step_profile.md"
    args = [sys.executable, "-m", "benchmarks.step_profile", "--data", tiny_data]
    args += ["--recipes", "uniform", "--compile", "off,on", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sections = out.read_text().split("\n## ")[1:]
    assert [s.split(":")[0] for s in sections] == ["uniform, compile off", "uniform, compile on"]
    for text in sections:
        shares = [float(r.split("|")[3].strip(" %")) for r in text.splitlines() if "| aten::" in r]
        assert shares and sum(shares) <= 100.0 + 1e-6
    assert "a compiled graph's own code" in sections[1]


@pytest.mark.slow
def test_epoch_on_test_replays_the_refit_it_measures(tiny_data, tmp_path):
    """benchmarks/epoch_on_test.py replays a finished run's refit: at the run's chosen epoch
    its test metrics are the run's own, exactly; a run without a refit is a one-line error."""
    # test_early_stopping's refit run: validation dips (the lr halves) before its best epoch.
    config = {
        "lr": 0.25,
        "dim": 128,
        "l2": 0.0,
        "batch_size": 1024,
        "epochs": 15,
        "eval_every": 1,
        "early_stopping_patience": 4,
        "lr_decay_on_plateau": 0.5,
        "sampler": {"name": "uniform"},
    }
    refit = json.dumps({**config, "refit": True})
    run = _train(tiny_data, tmp_path / "run", "--preset", "paper", "--config", refit)
    (tmp_path / "plain").mkdir()  # a run without a refit: its metrics name none
    plain = {k: v for k, v in run.items() if k not in ("refit", "before_refit")}
    (tmp_path / "plain" / "metrics.json").write_text(json.dumps(plain))
    chosen = run["refit"]["epochs"]
    assert run["refit"]["lr_after_epoch"], "the replayed schedule should hold a decay"
    options = ["--threads", "1", "--from-epoch", "1", "--every", "1"]
    proc = _run_script(
        "epoch_on_test", tiny_data, tmp_path / "report", *options, "--run", str(tmp_path / "run")
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["epoch"] for r in rows] == list(range(1, chosen + 1))
    assert rows[chosen - 1]["recall@20"] == run["test"]["recall@20"]
    assert rows[chosen - 1]["ndcg@20"] == run["test"]["ndcg@20"]
    assert "(the run’s choice)" in (tmp_path / "report" / "epoch_on_test.md").read_text()
    replay = [sys.executable, "-m", "benchmarks.epoch_on_test", *options, "--out", str(tmp_path)]
    _assert_usage_error([*replay, "--run", str(tmp_path / "plain")], "has no refit to replay")
    _assert_usage_error(
        [*replay, "--run", str(tmp_path / "run"), "--epochs", "0"], "must be at least 1"
    )


@pytest.mark.slow
def test_rescoring_scores_the_validated_tables_and_refuses_a_refit(tiny_data, tmp_path):
    """benchmarks/rescoring.py: its base row is the run's own best validation; a variant row
    per β; a refitted model (it has seen the validation pairs) is a one-line error."""
    options = ["--no-refit", "--dim", "8", "--epochs", "3", "--eval-every", "1"]
    run = _train(tiny_data, tmp_path / "valid", *options)
    # The same checkpoint, marked as a refit's (one that has trained on the validation pairs).
    shutil.copytree(tmp_path / "valid", tmp_path / "refit")
    config_file = tmp_path / "refit" / "checkpoint" / "config.json"
    saved = json.loads(config_file.read_text())
    saved["train"]["refit"] = True
    config_file.write_text(json.dumps(saved))
    score = [sys.executable, "-m", "benchmarks.rescoring", "--data", tiny_data, "--threads", "1"]
    score += ["--user", "0.1", "--item", "0.1", "--popularity", "0.01", "--norm", "0.05"]
    score += ["--out", str(tmp_path / "report")]
    proc = subprocess.run(
        [*score, "--model", str(tmp_path / "valid")], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "report" / "rescoring.md").read_text()
    rows = [line.split("|") for line in report.splitlines() if line.startswith("| ")]
    assert [r[1].strip() for r in rows[1:]] == [
        "base (the trained tables)",
        "user+0.1",
        "item+0.1",
        "popularity 0.01",
        "item norm 0.05",
    ]
    assert float(rows[1][2]) == round(run["early_stopping"]["best_valid"], 4)
    _assert_usage_error(
        [*score, "--model", str(tmp_path / "refit")], "trained on the validation pairs"
    )


def _random_inter(path, column: str, low: int, high: int):
    """An .inter file of ~4,000 distinct pairs of 150 users and 80 items, each with an integer
    `column` value drawn from [low, high)."""
    rng = np.random.default_rng(0)
    rows = {(int(u), int(rng.integers(0, 80))) for u in rng.integers(0, 150, 4000)}
    lines = [f"user_id:token\titem_id:token\t{column}:float"]
    lines += [f"u{u}\ti{i}\t{rng.integers(low, high)}" for u, i in sorted(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_warm_start_benchmark_compares_warm_and_cold_runs(tmp_path):
    """On an .inter file with timestamps: an earlier dataset cut from the grown one's train
    pairs, its model, then a cold and a warm run on the grown data, in one report."""
    source = _random_inter(tmp_path / "grown.inter", "timestamp", 0, 10**6)
    out, work = tmp_path / "report", tmp_path / "work"
    args = ["--input", str(source), "--out", str(out), "--work", str(work), "--seeds", "0"]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.warm_start", *args, "--epochs", "3", "--threads", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out / "warm_start.md").read_text()
    assert "| cold |" in report and "| warm (`--init-from`) |" in report
    assert (out / "warm_start.png").is_file() and not (out / "runs").exists()
    warm = json.loads((work / "warm-0" / "metrics.json").read_text())
    assert warm["config"]["init_from"] == str(work / "earlier-model")


@pytest.mark.slow
def test_the_interaction_weights_benchmark_judges_every_contender_on_liked_pairs(tmp_path):
    """On a rated file: every contender trains and is tested on the liked pairs; a rerun
    reads its runs from the cache."""
    from benchmarks.interaction_weights import CONTENDERS

    source = _random_inter(tmp_path / "rated.inter", "rating", 1, 6)
    out, work = tmp_path / "report", tmp_path / "work"
    args = ["--input", str(source), "--out", str(out), "--work", str(work), "--seeds", "0"]
    command = [sys.executable, "-m", "benchmarks.interaction_weights", *args, "--epochs", "2"]
    for _ in range(2):
        proc = subprocess.run(
            [*command, "--threads", "1"], capture_output=True, text=True, cwd=ROOT, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("seed 0: test recall@20") == 0  # the rerun trained nothing
    report = (out / "interaction_weights.md").read_text()
    assert all(f"| {name} |" in report for name in CONTENDERS)
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == len(CONTENDERS) and all(r["best_epoch"] <= 2 for r in runs)


def test_table2_says_where_the_papers_ordering_does_not_hold():
    from benchmarks.table2 import paper_comparison

    def finals(*values):
        return [{"test": {"ndcg@50": v}} for v in values]

    rows = [
        ("uniform", (0.001, 1.0), finals(0.14, 0.15)),
        ("adasir-u", (0.001, 1.0), finals(0.16, 0.16)),
        ("adasir-p", (0.001, 1.0), finals(0.12, 0.13)),
        ("dns", (0.001, 1.0), finals(0.15, 0.15)),
    ]
    lines = paper_comparison(rows, {"uniform": 0.12, "adasir-u": 0.15, "adasir-p": 0.15})
    by_name = {line.split(" | ")[0].strip("| "): line for line in lines[2:]}
    assert by_name["adasir-u"].endswith("| holds |")
    assert "**does not hold**" in by_name["adasir-p"]
    assert "| 0.1450 | 0.12 | 1.00 | 1.00 | – |" in by_name["uniform"]
    assert by_name["dns"].endswith("| – |")  # no paper number quoted: no verdict
