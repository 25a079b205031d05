"""Learning-rate schedules for both training stages: constant, one-cycle and cosine with warmup.

The public face of ``transferkit.training.schedules``, where the code lives (the contributing
guide shows the package's layers).
"""

from transferkit.training.schedules import (
    SCHEDULES,
    OneCycle,
    Schedule,
    make_schedule,
    steps_per_epoch,
)

__all__ = [
    "SCHEDULES",
    "OneCycle",
    "Schedule",
    "make_schedule",
    "steps_per_epoch",
]
