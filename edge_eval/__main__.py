import sys

from edge_eval.cli import main

sys.exit(main())
