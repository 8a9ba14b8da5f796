"""`python -m calo_assets LOG_DIR --out OUT`: the same CLI as `calo-logs-analyzer`."""

import sys

from calo_assets.cli import main

if __name__ == "__main__":  # the reader's worker processes import this module again: they must not run the CLI
    sys.exit(main())
