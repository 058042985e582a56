"""Evaluation: pure protocol functions and the registered metrics built on them."""
from .functional import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403
from .report import report_test_results  # noqa: F401
