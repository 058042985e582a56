"""Face data sets in the formats users have, samplers and transforms."""
from .samplers import *  # noqa: F401,F403
from .transforms import *  # noqa: F401,F403
