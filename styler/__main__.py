"""`python -m styler …` runs the CLI (e.g. `python -m styler worker` on a machine without the script)."""

import sys

from styler.cli.main import main

sys.exit(main())
