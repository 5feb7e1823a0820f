"""``python -m gsasr_plugin_cli ...`` is ``basicsr ...``."""
import sys

from gsasr_plugin_cli import main

sys.exit(main())
