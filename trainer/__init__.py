"""Train implicit-feedback recommenders with AdaSIR and its baselines, and query them.

The public surface is `fit`, `Model`, `TrainConfig`, `UnknownIds` and `split_frame`
(trainer/api.py); the
subpackages are internal: `data` (reading and preparing datasets), `core` (configuration,
models, losses, the engine, evaluation, top-k), `outputs` (checkpoints and run directories),
`distributed` (Ray Train and Tune) and `cli` (the `adasir` command).
"""

from typing import TYPE_CHECKING

__all__ = ["Model", "TrainConfig", "UnknownIds", "fit", "split_frame"]

if TYPE_CHECKING:
    from trainer.api import Model, UnknownIds, fit, split_frame
    from trainer.core.config import TrainConfig


def __getattr__(name: str):
    # Imported on first use: `import trainer.cli` (and every Ray worker) need not load the API.
    if name in ("Model", "UnknownIds", "fit", "split_frame"):
        from trainer import api

        return getattr(api, name)
    if name == "TrainConfig":
        from trainer.core.config import TrainConfig

        return TrainConfig
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
