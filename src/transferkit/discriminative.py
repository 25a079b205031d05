"""Discriminative learning rates: a learning rate per block of the backbone when fine-tuning.

The public face of ``transferkit.training.discriminative``, where the code lives (the
contributing guide shows the package's layers).
"""

from transferkit.training.discriminative import (
    LayerGrouping,
    block_groups,
    chunk_groups,
    discriminative_optimizer,
    group_learning_rates,
    trainable_groups,
)

__all__ = [
    "LayerGrouping",
    "block_groups",
    "chunk_groups",
    "discriminative_optimizer",
    "group_learning_rates",
    "trainable_groups",
]
