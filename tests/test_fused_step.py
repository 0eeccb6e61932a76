"""The compiled step: its written-out gradient is autograd's, compiled runs train the model the
eager step trains (to float tolerance), and a compile that fails trains eagerly after one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from pools.base import Negatives
from trainer.core.engine import Engine
from trainer.core.fused_step import bsl_shared_step, fusable
from trainer.core.loss import add_l2_gradient_, bilateral_softmax_loss
from trainer.core.models import build_model
from trainer.core.presets import build_config
from trainer.data.dataset import PreparedData


def _rows(seed: int, batch: int = 48, n: int = 30, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    p, pos_v = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
    neg_v = torch.randn(n, dim, generator=g)
    invalid = torch.rand(batch, n, generator=g) < 0.2
    invalid[3] = True  # a pair whose every negative is one of its user's items
    return p, pos_v, neg_v, invalid


@pytest.mark.parametrize("score", ["cosine", "dot"])
@pytest.mark.parametrize("l2", [0.0, 0.01])
@pytest.mark.parametrize("temperature", [0.08, 0.02])  # 0.02: the row-maximum shift
@pytest.mark.parametrize("weighted", [False, True])  # pair weights: TrainConfig.confidence
def test_written_out_gradient_is_autograds(score, l2, temperature, weighted):
    p, pos_v, neg_v, invalid = _rows(0)
    weight = torch.ones(p.shape[0])
    if weighted:
        weight = torch.rand(p.shape[0], generator=torch.Generator().manual_seed(1)) * 3
    model = build_model("mf", 2, 2, p.shape[1], seed=0, score=score)
    leaves = [t.clone().requires_grad_() for t in (p, pos_v, neg_v)]
    pos_s, neg_s = model.score_vectors(*leaves)
    negatives = Negatives(neg_v, invalid=invalid, pos_weight=weight if weighted else None)
    loss = bilateral_softmax_loss(pos_s, neg_s, negatives, temperature, 1.22 * temperature)
    loss.backward()
    if l2:
        loss = loss.detach() + add_l2_gradient_(tuple(leaves), l2, batch_size=p.shape[0])
    keep, no_dropout = (~invalid).float(), torch.ones_like(p)
    out = bsl_shared_step(
        p,
        pos_v,
        neg_v,
        keep,
        weight,
        no_dropout,
        temperature,
        1.22 * temperature,
        score == "cosine",
        l2,
    )
    assert float(out[0]) == pytest.approx(float(loss.detach()), rel=1e-5)
    for mine, leaf in zip(out[1:], leaves, strict=True):
        assert torch.allclose(mine, leaf.grad, rtol=1e-4, atol=1e-7)


def test_the_default_recipe_has_the_fused_step():
    assert fusable(build_config("recommended", {}))
    assert not fusable(build_config("recommended", {"sampler": "adasir-u"}))
    assert not fusable(build_config("paper", {}))


def _train(data, preset: str, given: dict, compile_: str, epochs: int = 3):
    cfg = build_config(preset, {**given, "compile": compile_, "epochs": epochs, "eval_every": 1})
    engine = Engine(cfg, data)
    records = []
    for _ in range(epochs):
        record = engine.train_epoch()
        record["valid"] = engine.evaluate("valid")
        records.append(record)
    return engine, records


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset,given",
    [
        # With pair weights (confidence) and user dropout: the fused step's own terms.
        (
            "recommended",
            {
                "dim": 16,
                "batch_size": 256,
                "sampler": {"num_negatives": 100},
                "confidence": "log",
                "user_dropout": 0.1,
            },
        ),
        ("paper", {"sampler": "uniform", "batch_size": 512}),
        ("paper", {"sampler": "adasir-u", "batch_size": 512}),
    ],
    ids=["default-fused-weighted-dropout", "bpr-loss", "adasir-u-loss"],
)
def test_compiled_runs_train_the_eager_model(tiny_data, rated_data, preset, given):
    data = PreparedData.load(rated_data if "confidence" in given else tiny_data)
    eager, eager_records = _train(data, preset, given, "off")
    compiled, compiled_records = _train(data, preset, given, "on")
    assert "compile_s" in compiled_records[0] and "compile_s" not in compiled_records[1]
    for a, b in zip(eager_records, compiled_records, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        for metric, value in a["valid"].items():
            assert b["valid"][metric] == pytest.approx(value, abs=2e-3)
    for name, value in eager.model.state_dict().items():
        assert torch.allclose(compiled.model.state_dict()[name], value, atol=1e-4), name


@pytest.mark.slow
def test_a_failed_compile_trains_eagerly_and_says_why_once(tiny_data, tmp_path):
    """No C++ compiler on the machine: inductor fails at the first step, the run goes on."""
    script = textwrap.dedent(
        f"""
        import torch._inductor.config as inductor
        inductor.cpp.cxx = ("/nonexistent/c++",)
        import sys
        from trainer.core.callbacks import format_epoch
        from trainer.core.engine import Engine
        from trainer.core.presets import build_config
        from trainer.data.dataset import PreparedData
        data = PreparedData.load({tiny_data!r})
        for compile_ in ("on", "off"):
            given = {{"dim": 16, "batch_size": 256, "epochs": 2, "compile": compile_,
                     "sampler": {{"num_negatives": 100}}}}
            engine = Engine(build_config("recommended", given), data)
            records = [engine.train_epoch() for _ in range(2)]
            errors = [r.get("compile_error") for r in records]
            print(compile_, records[0].get("step"), errors[1], [r["loss"] for r in records])
            print(format_epoch(records[0], 2), file=sys.stderr)
        """
    )
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    on, off = proc.stdout.splitlines()
    # The record says the step fell back, the reason comes once, in the first epoch's line:
    assert on.split(" ", 3)[1:3] == ["eager", "None"]
    assert "eager step: torch.compile failed: " in proc.stderr.splitlines()[-2]
    assert "compile" not in proc.stderr.splitlines()[-1]
    assert on.split(" ", 3)[3] == off.split(" ", 3)[3]  # and trained exactly as eager
