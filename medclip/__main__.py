"""``python -m medclip`` runs the CLI."""

import sys

from medclip.cli import main

sys.exit(main())
