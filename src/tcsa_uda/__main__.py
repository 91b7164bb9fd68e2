"""``python -m tcsa_uda`` runs the command line."""

import sys

from tcsa_uda.cli import main

sys.exit(main())
