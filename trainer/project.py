"""Where the project's source tree is: what a local Ray's workers put on their PYTHONPATH and
what the service uploads as a job's working directory."""

import os

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
