"""cascade runbook: move a PostgreSQL database's foreign keys onto ON DELETE CASCADE, safely."""
from __future__ import annotations

import logging

__version__ = "0.1.0"

logger = logging.getLogger("runbook_lib")
logger.addHandler(logging.NullHandler())
