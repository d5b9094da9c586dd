import sys

from tinyinterp.cli.main import main

sys.exit(main())
