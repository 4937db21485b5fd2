import sys

from tritonprop.cli import main

sys.exit(main())
