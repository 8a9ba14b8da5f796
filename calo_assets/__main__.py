"""`python -m calo_assets LOG_DIR --out OUT`: the same CLI as `calo-logs-analyzer`."""

import sys

from calo_assets.cli import main

sys.exit(main())
