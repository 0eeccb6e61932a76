"""The training commands' command lines: `adasir train` (train.py) and the flags generated from
the configs (flags.py). The `adasir` command itself is adasir/cli.py."""
