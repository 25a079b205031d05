"""The classifier: :class:`TransferClassifier` and :func:`load_classifier`.

The class is the one owner of its state (:mod:`~transferkit.classifier.transfer_classifier`);
its methods are grouped by concept: the recipe's stages and freezing there, the one-call
:meth:`~TransferClassifier.fit` in :mod:`~transferkit.classifier.one_call`, prediction and
evaluation in :mod:`~transferkit.classifier.inference_methods`, files in
:mod:`~transferkit.classifier.file_methods`.
"""

from transferkit.classifier.loading import load_classifier
from transferkit.classifier.transfer_classifier import TransferClassifier

__all__ = ["TransferClassifier", "load_classifier"]
