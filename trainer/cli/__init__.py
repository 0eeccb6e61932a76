"""Entry points: `adasir prepare | train | tune | serve | recommend` and their flags."""

from trainer.cli.main import main

__all__ = ["main"]
