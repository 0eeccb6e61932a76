"""`python trainer/prepare.py ...` (what `ray job submit` runs) is `adasir prepare ...`:
this script only calls trainer.data.prepare.main (the package must be installed: `pip install -e .`)."""

import sys

from trainer.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
