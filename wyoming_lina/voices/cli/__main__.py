"""``python -m wyoming_lina.voices.cli``: the voice commands without the server's parser."""

import sys

from . import main

sys.exit(main())
