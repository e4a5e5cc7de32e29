"""The training helpers of the use cases under models/: :mod:`raylane.training`.

Kept as a module of its own so each use case's ``train.py`` imports ``from _training import
...`` as before; the helpers themselves are package code (a project created with
``raylane init`` has no models/_training.py).
"""

from raylane.training import *  # noqa: F403
from raylane.training import __all__ as __all__
