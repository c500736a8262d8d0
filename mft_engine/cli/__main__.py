"""`python -m mft_engine.cli`: the `mft` command."""
import sys

from .main import main

sys.exit(main())
