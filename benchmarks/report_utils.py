"""Helpers shared by the report scripts: training curves, Markdown and PNG output."""

from __future__ import annotations

import os
import shlex
import statistics
import sys
import time

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from trainer.core.callbacks import CurveRecorder
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine


def training_curve(data, cfg: TrainConfig) -> dict:
    """Train with validation every `eval_every` epochs. Returns per-eval points of
    (cumulative sample+train seconds, epoch, valid NDCG@50, valid Recall@50), per-epoch
    records, and test metrics. Evaluation time is not counted as training time."""
    curve = CurveRecorder()
    result = Engine(cfg, data).fit([curve])
    return {
        "points": curve.points,
        "epochs": result["epochs"],
        "test": result["test"],
        "seconds": curve.seconds,
    }


def write_report(out: str, name: str, title: str, command: str, body: list[str]) -> str:
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}.md")
    text = "\n".join([f"# {title}", "", "```bash", command, "```", "", *body, ""])
    with open(path, "w") as fh:
        fh.write(text)
    print(text)
    return path


def save_figure(fig, out: str, name: str) -> str:
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command_line() -> str:
    """The command that ran this script, as `python -m benchmarks.NAME ...` from the project
    root (so a report does not carry the path of the machine it ran on)."""
    script = os.path.abspath(sys.argv[0])
    if script.startswith(ROOT + os.sep) and script.endswith(".py"):
        module = os.path.relpath(script, ROOT)[:-3].replace(os.sep, ".")
        return "python " + shlex.join(["-m", module, *sys.argv[1:]])
    return "python " + shlex.join([script, *sys.argv[1:]])


def mean_sd(values: list[float]) -> str:
    """ "mean ± sample standard deviation" to 4 decimals; one value alone as it is."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M")
