"""``python -m mcp_remediator`` is the ``mcp-remediator`` command."""

import sys

from mcp_remediator.cli import main

sys.exit(main())
