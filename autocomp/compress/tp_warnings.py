"""torch-pruning's warnings that a search must not repeat once per trial."""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator


@contextlib.contextmanager
def quiet_unwrapped_parameters() -> Iterator[None]:
    """Silence torch-pruning's "Unwrapped parameters detected" warning.

    It fires for every parameter that belongs to no layer, such as a ViT's position embedding or
    class token, and says it will prune their last dimension: the embedding width, which is what
    those parameters share with the residual stream. That default is right for them, and a user
    watching a search should not see it once per trial.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected", category=UserWarning)
        yield
