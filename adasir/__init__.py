"""The `adasir` command (adasir/cli.py): one entry point over trainer and service."""
