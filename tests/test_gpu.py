"""The engine on a CUDA device (skipped without one): every sampler runs, state stays on the
device, and the metrics are those of a CPU run of the same model."""

from __future__ import annotations

import pytest
import torch

from pools import SAMPLER_NAMES
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.data.dataset import PreparedData

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_trains_on_cuda(tiny_data, sampler):
    cfg = TrainConfig(
        preset="paper", epochs=2, lr=0.01, batch_size=512, device="cuda", sampler={"name": sampler}
    )
    engine = Engine(cfg, PreparedData.load(tiny_data))
    losses = [engine.train_epoch()["loss"] for _ in range(2)]
    assert all(p.is_cuda for p in engine.model.parameters())
    assert losses[-1] < losses[0] or sampler in ("irgan", "warp")


def test_cuda_evaluation_matches_cpu(tiny_data):
    data = PreparedData.load(tiny_data)
    gpu = Engine(TrainConfig(preset="paper", epochs=1, device="cuda", batch_size=512), data)
    gpu.train_epoch()
    cpu = Engine(TrainConfig(preset="paper", epochs=1, device="cpu", batch_size=512), data)
    cpu.model.load_state_dict({k: v.cpu() for k, v in gpu.model.state_dict().items()})
    a, b = gpu.evaluate("test"), cpu.evaluate("test")
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-6)


@pytest.mark.parametrize("given", [{"dim": 16, "batch_size": 256}, {"batch_size": 512}])
def test_the_captured_step_trains_the_eager_model_on_cuda(tiny_data, given):
    """--compile on CUDA: the fused default (a CUDA graph) and the compiled paper loss."""
    from trainer.core.presets import build_config

    preset = "recommended" if "dim" in given else "paper"
    if preset == "recommended":
        given = {**given, "sampler": {"num_negatives": 100}}
    data = PreparedData.load(tiny_data)
    runs = []
    for compile_ in ("off", "on"):
        cfg = build_config(preset, {**given, "device": "cuda", "epochs": 3, "compile": compile_})
        engine = Engine(cfg, data)
        runs.append(([engine.train_epoch()["loss"] for _ in range(3)], engine))
    (eager_losses, eager), (compiled_losses, compiled) = runs
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    for name, value in eager.model.state_dict().items():
        assert torch.allclose(compiled.model.state_dict()[name], value, atol=1e-4), name
