"""`python -m xopt.cli`: the same as the `xopt` command."""
import sys

from xopt.cli import main

sys.exit(main())
