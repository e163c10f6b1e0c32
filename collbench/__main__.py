import sys

from collbench.cli import main

sys.exit(main())
