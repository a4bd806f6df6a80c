import sys

from deploy.emulator.pi import main

sys.exit(main())
