"""Cached backbone features: training the head without running the frozen backbone every epoch.

While the backbone is frozen its output for an image cannot change, yet the reference recipe
pushes every training and validation image through it again in every epoch. The head is
global average pooling → dropout → dense; pooling has no parameters, so the pooled feature
vector of each image can be computed once (backbone in inference mode) and the head trained on
those vectors. Without augmentation that is exact. With augmentation, ``views`` augmented
copies of each training image are computed up front and epoch ``e`` trains on copy
``e % views``: a fresh augmentation per epoch for the first ``views`` epochs, repeated after.

The trained layers are the full model's own dropout and dense layers (:class:`FeatureHead`
holds them, it copies nothing), so the full model is trained the moment the head is.

Features stream through in batches and are stored as float32 rows: in memory up to a byte
budget shared by all splits, then in raw files in a temporary folder, read back through
``numpy.memmap``. The folder is deleted when the cache is closed.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import keras
import numpy as np
import tensorflow as tf

from transferkit import _backend
from transferkit.data import sharding
from transferkit.data.inputs import epoch_order
from transferkit.errors import DataError
from transferkit.training.options import Verbose

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "Augmenter",
    "CachedFeatures",
    "CachedSplit",
    "FeatureExtractor",
    "FeatureHead",
    "cache_features",
]

#: Bytes of cached features kept in memory (1 GiB, about 200,000 MobileNetV2 feature
#: vectors of 1,280 float32 values); the rest go to a temporary folder on disk.
DEFAULT_MEMORY_LIMIT = 1 << 30

# Validation reads features in batches this large: Keras averages loss and metrics over
# samples, so the result is the same, and an epoch pays the per-batch overhead once, not ~30x.
_EVALUATION_ROWS = 1024


class Augmenter(keras.Model):
    """The model's own augmentation layer, run in training mode so that it really augments.

    A model of its own rather than part of :class:`FeatureExtractor`, so that the backbone is
    compiled once for augmented training images and plain validation images alike.

    Args:
        model: the classifier's full Keras model; it must have an ``augmentation`` layer.
    """

    def __init__(self, model: keras.Model) -> None:
        super().__init__(dtype=model.dtype_policy, name="augmenter")
        self.image_dtype = model.inputs[0].dtype
        self.augmentation = model.get_layer("augmentation")

    def call(self, images: Any) -> Any:
        """Augments a batch of raw-pixel images."""
        # An explicit training=True wins over the training=False that predict passes.
        return self.augmentation(keras.ops.cast(images, self.image_dtype), training=True)


class FeatureExtractor(keras.Model):
    """Raw pixels → pooled backbone features, through the model's own layers.

    Args:
        model: the classifier's full Keras model.
        backbone: the backbone model nested in it.
    """

    def __init__(self, model: keras.Model, backbone: keras.Model) -> None:
        super().__init__(dtype=model.dtype_policy, name="feature_extractor")
        self.image_dtype = model.inputs[0].dtype
        self.preprocessing = model.get_layer("preprocessing")
        self.backbone = backbone
        self.pooling = model.get_layer("pooling")

    def call(self, images: Any) -> Any:
        """Pools the backbone's features of a batch of raw-pixel images."""
        x = self.preprocessing(keras.ops.cast(images, self.image_dtype))
        x = self.backbone(x, training=False)
        return self.pooling(x)


class FeatureHead(keras.Model):
    """The full model's dropout and dense logits layers, applied to pooled feature vectors.

    Args:
        model: the classifier's full Keras model; its ``dropout`` and ``logits`` layers are
            shared, not copied.
    """

    def __init__(self, model: keras.Model) -> None:
        super().__init__(dtype=model.dtype_policy, name="feature_head")
        self.dropout = model.get_layer("dropout")
        self.logits = model.get_layer("logits")

    def call(self, features: Any) -> Any:
        """Logits for a batch of pooled feature vectors."""
        return self.logits(self.dropout(features))


class _Budget:
    """The memory budget shared by every stored column, and the folder for what overflows."""

    def __init__(self, memory_limit: int) -> None:
        self.memory_left = memory_limit
        self.folder: Path | None = None

    def take(self, size: int) -> bool:
        if size > self.memory_left:
            return False
        self.memory_left -= size
        return True

    def new_file(self, name: str) -> Path:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="transferkit-features-"))
        return self.folder / f"{name}.f32"

    def remove_folder(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


class _Column:
    """A growing float32 array of feature rows: chunks in memory, or a raw file once spilled."""

    def __init__(self, budget: _Budget, name: str) -> None:
        self._budget = budget
        self._name = name
        self._chunks: list[np.ndarray] = []
        self._path: Path | None = None
        self._file: IO[bytes] | None = None
        self._rows = 0
        self._width = 0

    def append(self, chunk: np.ndarray) -> None:
        if self._file is None and not self._budget.take(chunk.nbytes):
            self._path = self._budget.new_file(self._name)
            self._file = self._path.open("wb")
            for held in self._chunks:
                held.tofile(self._file)
            self._chunks = []
        if self._file is not None:
            chunk.tofile(self._file)
        else:
            self._chunks.append(chunk)
        self._rows += len(chunk)
        self._width = chunk.shape[1]

    def finish(self) -> np.ndarray:
        if self._file is not None and self._path is not None:
            self._file.close()
            return np.memmap(self._path, np.float32, mode="r", shape=(self._rows, self._width))
        array = np.empty((self._rows, self._width), np.float32)
        start = 0
        while self._chunks:  # release each chunk once copied: peak memory stays one array
            chunk = self._chunks.pop(0)
            array[start : start + len(chunk)] = chunk
            start += len(chunk)
        return array


@dataclass
class CachedSplit:
    """The cached features of one split (training or validation data).

    Attributes:
        views: one float32 array of shape ``(n, channels)`` per view (an ``numpy.memmap``
            when it went to disk).
        targets: the labels (and sample weights, if the data had them), ``n`` rows each.
        batch_size: the batch size the data came in, kept for training on the features.
    """

    views: list[np.ndarray]
    targets: tuple[np.ndarray, ...]
    batch_size: int

    def __len__(self) -> int:
        return len(self.targets[0])

    @property
    def steps(self) -> int:
        """Optimizer steps in one pass over the split (whole global batches when cut)."""
        return sharding.steps_per_epoch(len(self), self.batch_size)

    @property
    def on_disk(self) -> bool:
        """Whether any view is memory-mapped from a file rather than held in memory."""
        return any(isinstance(view, np.memmap) for view in self.views)

    def dataset(
        self, *, first_epoch: int = 0, epochs: int | None = None, seed: int = 0
    ) -> tf.data.Dataset:
        """Batches of ``(features, *targets)`` read from the cache.

        Args:
            first_epoch: the global index of the first epoch, which picks its view.
            epochs: None for one pass over view 0 in order, in large batches
                (validation); otherwise that many epochs in one dataset, each reshuffled
                and reading view ``epoch % len(views)``.
            seed: the shuffling seed. Epoch ``e`` is shuffled by ``(seed, e)`` alone, so
                the order changes from epoch to epoch, is the same in two runs with the
                same seed, and a resumed run's epoch ``e`` sees what an uninterrupted one did.

        Returns:
            A ``tf.data.Dataset`` of batches.
        """
        count = len(self)
        batch_rows = sharding.row_batcher(self.batch_size)

        def shuffled(epoch: tf.Tensor) -> tf.data.Dataset:
            # A stateless shuffle: a shuffle op inside flat_map under a global seed repeats
            # the same order every epoch.
            order = tf.data.Dataset.from_tensor_slices(epoch_order(count, seed, epoch))
            view = epoch % len(self.views)
            # Each process's share of every global batch, in a multi-process run.
            return batch_rows(order).map(lambda rows: (view, rows))

        if epochs is None:  # evaluation: every row, on every process
            batch_size = max(self.batch_size, _EVALUATION_ROWS)
            in_order = tf.data.Dataset.range(count).batch(batch_size)
            batches = in_order.map(lambda rows: (tf.constant(0, tf.int64), rows))
        else:
            batches = tf.data.Dataset.range(first_epoch, first_epoch + epochs).flat_map(shuffled)
        return batches.map(self._load).prefetch(tf.data.AUTOTUNE)

    def _read(self, view: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(self.views[int(view)][rows])] + [t[rows] for t in self.targets]

    def _load(self, view: tf.Tensor, rows: tf.Tensor) -> tuple[tf.Tensor, ...]:
        dtypes = [tf.float32] + [tf.as_dtype(t.dtype) for t in self.targets]
        loaded = tf.numpy_function(self._read, [view, rows], dtypes, stateful=False)
        loaded[0].set_shape((None, self.views[0].shape[1]))
        for tensor, target in zip(loaded[1:], self.targets, strict=True):
            tensor.set_shape((None, *target.shape[1:]))
        return tuple(loaded)


class _StopRelay(keras.callbacks.Callback):
    """Passes a ``stop_training`` request made on the full model on to the head being fit."""

    def __init__(self, head: keras.Model) -> None:
        super().__init__()
        self._head = head

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.model.stop_training = False

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._relay()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._relay()

    def _relay(self) -> None:
        if self.model.stop_training:
            self._head.stop_training = True


@dataclass
class CachedFeatures:
    """Cached training and validation features, and the head that trains on them.

    Attributes:
        head: a :class:`FeatureHead` sharing the full model's dropout and logits layers.
        train: the training split.
        validation: the validation split, or None.
    """

    head: FeatureHead
    train: CachedSplit
    validation: CachedSplit | None

    @property
    def on_disk(self) -> bool:
        """Whether any features went to disk."""
        splits = [self.train] if self.validation is None else [self.train, self.validation]
        return any(split.on_disk for split in splits)

    def fit(
        self,
        model: keras.Model,
        *,
        initial_epoch: int,
        epochs: int,
        callbacks: Sequence[keras.callbacks.Callback],
        verbose: Verbose,
        seed: int = 0,
        transform: Callable[[tf.data.Dataset], tf.data.Dataset] | None = None,
    ) -> keras.callbacks.History:
        """Trains the (compiled) head on the cached features.

        Callbacks see the full ``model`` as ``callback.model``, as in a plain ``fit``: a
        checkpoint saves the whole classifier, and a ``stop_training`` they set is relayed
        to the head's training loop.

        Args:
            model: the full model, whose head layers are being trained.
            initial_epoch: the global index of the first epoch.
            epochs: epochs to train.
            callbacks: Keras callbacks.
            verbose: Keras' progress output.
            seed: the shuffling seed (see :meth:`CachedSplit.dataset`).
            transform: maps the training batches of ``(features, *targets)`` (MixUp of
                the feature vectors); validation batches are never transformed.

        Returns:
            The Keras ``History`` of the run.
        """
        history = keras.callbacks.History()
        callback_list = keras.callbacks.CallbackList(
            [*callbacks, history, _StopRelay(self.head)],
            add_progbar=verbose != 0,
            model=model,
            verbose=verbose,
            epochs=initial_epoch + epochs,
            steps=self.train.steps,
        )
        validation = None if self.validation is None else self.validation.dataset()
        # fit() returns model.history, which the History callback sets on the full model.
        self.head.history = history
        train = self.train.dataset(first_epoch=initial_epoch, epochs=epochs, seed=seed)
        self.head.fit(
            train if transform is None else transform(train),
            validation_data=validation,
            initial_epoch=initial_epoch,
            epochs=initial_epoch + epochs,
            steps_per_epoch=self.train.steps,
            shuffle=False,  # the dataset reshuffles every epoch itself
            callbacks=callback_list,
            verbose=verbose,
        )
        return history


class _Shares:
    """Which batches this process computes the features of, and their exchange.

    Alone, a process computes every batch. In a multi-process run, process ``i`` of ``n``
    computes batches ``i``, ``i + n``, ...; then the processes exchange them, batch by batch
    in order, so that every process holds the features of every image (each trains on its
    rows of every global batch, which can be anywhere).
    """

    def __init__(self, columns: list[_Column]) -> None:
        self.columns = columns
        self.shard = _backend.data_shard()
        self.computed: list[list[np.ndarray]] = [[] for _ in columns]

    def computes(self, number: int) -> bool:
        return self.shard is None or number % self.shard[1] == self.shard[0]

    def add(self, view: int, features: np.ndarray) -> None:
        if self.shard is None:
            self.columns[view].append(features)
        else:
            self.computed[view].append(features)

    def exchange(self, sizes: list[int], width: int) -> None:
        """Every process's batches into the columns, in order (``sizes``: rows per batch)."""
        if self.shard is None:
            return
        index, processes = self.shard
        for view, column in enumerate(self.columns):
            for first in range(0, len(sizes), processes):
                # Equal shapes on every process: a batch padded to the largest, or zeros.
                mine = np.zeros((max(sizes), width), np.float32)
                if first + index < len(sizes):
                    mine[: sizes[first + index]] = self.computed[view][first // processes]
                everyone = _backend.gather_from_processes(mine)
                for number in range(first, min(first + processes, len(sizes))):
                    column.append(everyone[number - first, : sizes[number]])


def _extract(
    extractor: FeatureExtractor,
    augmenter: Augmenter | None,
    data: tf.data.Dataset,
    *,
    views: int,
    budget: _Budget,
    name: str,
) -> CachedSplit:
    columns = [_Column(budget, f"{name}-view{view}") for view in range(views)]
    shares = _Shares(columns)
    targets: list[list[np.ndarray]] = []
    batch_size = 0
    for number, (batch_images, *batch_targets) in enumerate(data):
        # NumPy, not the tf.data tensor: JAX's predict_on_batch cannot take a TF tensor.
        images = np.asarray(batch_images)
        for view_index in range(views):
            # Every process augments every batch, so that its random state stays in step.
            view = images if augmenter is None else augmenter.predict_on_batch(images)
            if shares.computes(number):
                features = extractor.predict_on_batch(view)
                shares.add(view_index, np.asarray(features, dtype=np.float32))
        targets.append([np.asarray(target) for target in batch_targets])
        batch_size = max(batch_size, len(images))
    if not targets:
        msg = f"{name} holds no images, so there is nothing to train on. Received: {name}=empty"
        raise DataError(msg)
    shares.exchange([len(parts[0]) for parts in targets], extractor.pooling.output.shape[-1])
    return CachedSplit(
        views=[column.finish() for column in columns],
        targets=tuple(np.concatenate(parts) for parts in zip(*targets, strict=True)),
        batch_size=batch_size,
    )


@contextlib.contextmanager
def cache_features(
    model: keras.Model,
    backbone: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset | None,
    *,
    views: int,
    augment: bool,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    jit_compile: bool | str = "auto",
) -> Iterator[CachedFeatures]:
    """Computes the pooled features of the data once; deletes any files on exit.

    Args:
        model: the classifier's full Keras model (its backbone frozen).
        backbone: the backbone model nested in it.
        train: batches of ``(images, labels[, sample_weights])``.
        validation: the same, or None. Never augmented; one view.
        views: how many views of each training image to compute.
        augment: whether the training views go through the model's augmentation.
        memory_limit: bytes of features to hold in memory before writing to disk.
        jit_compile: passed to the extractor's ``compile``.

    Yields:
        The :class:`CachedFeatures`.
    """
    budget = _Budget(memory_limit)
    try:
        extractor = FeatureExtractor(model, backbone)
        extractor.compile(jit_compile=jit_compile)
        augmenter = None
        if augment:
            augmenter = Augmenter(model)
            augmenter.compile(jit_compile=jit_compile)
        train_split = _extract(extractor, augmenter, train, views=views, budget=budget, name="data")
        validation_split = None
        if validation is not None:
            validation_split = _extract(
                extractor, None, validation, views=1, budget=budget, name="validation_data"
            )
        yield CachedFeatures(FeatureHead(model), train_split, validation_split)
    finally:
        budget.remove_folder()
