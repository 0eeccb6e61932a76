"""`python trainer/run.py ...` (what `ray job submit` runs) is `adasir train ...`:
this script only calls trainer.cli.train.main (the package must be installed: `pip install -e .`)."""

import sys

from trainer.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
