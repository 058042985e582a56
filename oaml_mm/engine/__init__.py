"""Engine: the runner, hooks, optimizer wrappers and loops oaml_mm adds to mmengine."""
from .hooks import *  # noqa: F401,F403
from .optimizers import *  # noqa: F401,F403
from .runner import *  # noqa: F401,F403
