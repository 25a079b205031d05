"""``fit()`` and ``find_learning_rate()``: the one-call job and the finder that feeds it.

The policy itself (budgets, rates, decisions) lives in :mod:`transferkit.training.fit_policy`,
which drives the classifier through its public methods.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras

from transferkit.classifier.state import ClassifierState
from transferkit.data import inputs
from transferkit.history import Stage, TrainingHistory
from transferkit.model.class_weights import ClassWeight
from transferkit.training import fit_policy, lr_finder
from transferkit.training.options import Verbose
from transferkit.training.regularization import Regularization

__all__ = ["OneCallMethods"]


class OneCallMethods:
    """:meth:`fit` and :meth:`find_learning_rate` of :class:`~transferkit.TransferClassifier`."""

    def fit(
        self: ClassifierState,
        data: inputs.LabeledData,
        *,
        validation_data: inputs.LabeledData | None = None,
        epochs: int | None = None,
        validation_split: float = 0.2,
        learning_rate: float | None = None,
        batch_size: int = 32,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        verbose: Verbose = "auto",
        seed: int = 0,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        class_weight: ClassWeight = None,
        regularization: Regularization | None = None,
    ) -> TrainingHistory:
        """The whole job in one call: head, unfreeze, fine-tune, with measured defaults.

        1. Without ``validation_data``, holds out ``validation_split`` of each class (seeded;
           a folder's ``validation/`` folder if it has one; multi-hot labels by iterative
           stratification, keeping every label in training).
        2. Trains the head (on cached features) with Adam at the :meth:`find_learning_rate`
           suggestion, a cosine schedule and about 150 optimizer steps, stopping early on
           the validation loss and keeping the best epoch. With at most 4096 training
           images, then refits the head as a linear probe: L2-regularized logistic
           regression on the same frozen features, solved to convergence, its strength
           chosen by the held-out log-loss (on the validation data, or by
           cross-validation when that holds fewer than 5 images of a class): the head
           alone that step 6 falls back to. Fine-tuning starts from the minibatch head.
        3. Unfreezes the whole backbone (BatchNormalization stays frozen).
        4. Races fine-tuning's rate: the head's rate times 1, 3, 10 and 30 each train a
           short run (a fifth of fine-tuning's steps) from the head's weights and are
           scored on the validation data; every weight is put back after each.
        5. Fine-tunes at the winning rate with Adam, a cosine schedule with warmup and
           about 80 optimizer steps, stopping early and keeping the best epoch.
        6. Keeps the fine-tuned weights only if they beat the head alone (the probe, on
           small data) on the validation data (accuracy, AUC for multi-label, then the
           loss); otherwise the head alone comes back and the backbone is frozen again.

        Budgets count optimizer steps, so they scale with the data. Every decision is
        recorded in ``history.decisions`` and printed unless ``verbose=0``; the
        transfer-quality page of the docs has the measurements behind the defaults.

        Args:
            data: as for :meth:`fit_head`.
            validation_data: as for :meth:`fit_head`; None holds a split out of ``data``.
            epochs: int. Fine-tuning epochs, instead of the step budget. Defaults to None.
            validation_split: float in (0, 1). The fraction of each class held out when
                there is no ``validation_data``. Defaults to 0.2.
            learning_rate: float. The head's rate instead of the finder's (fine-tuning's
                candidates are multiples of it). Defaults to None.
            batch_size: int. Batch size for arrays and folders. Defaults to 32.
            callbacks: Keras callbacks, passed to both stages.
            verbose: Keras' progress output, and whether decisions are printed.
            seed: int. Seed of the validation split. Defaults to 0.
            checkpoint_dir: as for :meth:`fit_head`: run the same ``fit`` again with the
                same folder to resume; the finder's suggestion and the race's result are
                kept there too (``fit.json``), so a resumed run does not race again.
            class_weight: as for :meth:`fit_head`, in both stages. Defaults to None.
            regularization: as for :meth:`fit_head`, in both stages. Defaults to None.

        Returns:
            :attr:`history`, with both stages' epochs and the decisions.

        Raises:
            DataError: a class has too few images to hold one out for validation.
            TrainingDivergedError: as for :meth:`fit_head`.
        """
        return fit_policy.fit(
            self, data, validation_data=validation_data, epochs=epochs,
            validation_split=validation_split, learning_rate=learning_rate,
            batch_size=batch_size, callbacks=callbacks, verbose=verbose, seed=seed,
            checkpoint_dir=checkpoint_dir, class_weight=class_weight, regularization=regularization,
        )  # fmt: skip

    def find_learning_rate(
        self: ClassifierState,
        data: inputs.LabeledData,
        *,
        stage: Stage = "head",
        min_lr: float = 1e-7,
        max_lr: float = 10.0,
        steps: int = 100,
        batch_size: int = 32,
    ) -> lr_finder.LearningRateFinderResult:
        """Sweeps learning rates over a few batches and suggests one (fastai's ``lr_find``).

        Trains ``steps`` batches while the rate grows exponentially from ``min_lr`` to
        ``max_lr``, stops once the smoothed loss diverges, and suggests a rate by fastai's
        valley rule (see :mod:`transferkit.lr_finder`). Every weight, statistic and random
        state is left exactly as it was. ``stage="head"`` sweeps Adam on the head, on cached
        features (seconds); ``stage="fine_tune"`` sweeps RMSprop on the unfrozen model, one
        rate for every layer (call :meth:`unfreeze` first).

        Args:
            data: as for :meth:`fit_head`; repeated when it has fewer than ``steps`` batches.
            stage: ``"head"`` or ``"fine_tune"``. Defaults to ``"head"``.
            min_lr: float. The first rate. Defaults to 1e-7.
            max_lr: float. The last rate. Defaults to 10.
            steps: int. Batches to train, at least 10. Defaults to 100.
            batch_size: int. Batch size for arrays and folders. Defaults to 32.

        Returns:
            A :class:`~transferkit.lr_finder.LearningRateFinderResult`: the rates tried, the
            smoothed losses, the ``suggestion``, and ``plot(path)``.

        Raises:
            NotUnfrozenError: ``stage="fine_tune"`` with the whole backbone frozen.
            InvalidArgumentError: an argument is invalid.
        """
        lr_finder.check_sweep(stage, min_lr, max_lr, steps)  # before the data is read
        train = self._labeled(data, batch_size, shuffle=True)
        return lr_finder.sweep_stage(
            self._target(), train.dataset, stage=stage, min_lr=min_lr, max_lr=max_lr, steps=steps
        )
