"""`python trainer/tune.py ...` (what `ray job submit` runs) is `adasir tune ...`:
this script only calls trainer.distributed.tune.main (the package must be installed: `pip install -e .`)."""

import sys

from trainer.distributed.tune import main

if __name__ == "__main__":
    sys.exit(main())
