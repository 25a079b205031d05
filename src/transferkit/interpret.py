"""Where a classifier is wrong: confusion matrix, per-class report and top losses.

The public face of ``transferkit.inference.interpret``, where the code lives (the
contributing guide shows the package's layers).
"""

from transferkit.inference.interpret import (
    MAX_PLOTTED,
    Interpretation,
    MultiLabelInterpretation,
    MultiLabelTopLoss,
    TopLoss,
    interpret,
)

__all__ = [
    "MAX_PLOTTED",
    "Interpretation",
    "MultiLabelInterpretation",
    "MultiLabelTopLoss",
    "TopLoss",
    "interpret",
]
