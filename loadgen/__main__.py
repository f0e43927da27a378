"""`python -m loadgen` / `llmobs-loadgen`: see loadgen/README.md or `--help`."""

import sys

from loadgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
