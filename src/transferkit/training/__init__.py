"""Training.

The stage runner, its options and checkpoints, cached features, schedules, discriminative rates,
the learning-rate finder and ``fit()``'s policy.
"""
