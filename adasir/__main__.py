import sys

from adasir.cli import main

sys.exit(main())
