"""The learning-rate finder: a short sweep of exponentially growing rates, and a suggestion.

The public face of ``transferkit.training.lr_finder``, where the code lives (the contributing
guide shows the package's layers).
"""

from transferkit.training.lr_finder import (
    LearningRateFinderResult,
    find_learning_rate,
    suggest_learning_rate,
)

__all__ = [
    "LearningRateFinderResult",
    "find_learning_rate",
    "suggest_learning_rate",
]
