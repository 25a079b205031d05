"""A linear probe: the head fitted as L2-regularized logistic regression on cached features.

With a few images per class, a head trained by minibatch Adam with early stopping on a
handful of validation images is a poorly regularized linear model: it stops wherever the
noisy validation loss happened to turn. The well-regularized answer is the convex one:
logistic regression on the frozen backbone's pooled features, with the L2 strength chosen
on held-out data, solved to convergence (what scikit-learn's ``LogisticRegression`` with
``C`` picked on validation does). That is what :func:`fit_probe` computes, with NumPy alone:

* features are standardized (per feature, training statistics) for the solver's sake, and
  the standardization is folded back into the kernel and bias, so the result is plain Dense
  weights on the raw pooled features;
* the loss is the head's own: softmax cross-entropy, or sigmoid cross-entropy for a binary
  head (one logit) and per class for multi-label heads, weighed by the class weights;
* each strength of :data:`L2_GRID` (strongest first, each warm-starting the next) is solved
  by full-batch L-BFGS and scored by the mean log-loss on held-out data: the validation
  split, or, when that holds fewer than :data:`MIN_HELD_OUT_PER_CLASS` images of some class,
  ``k``-fold cross-validation over training and validation features together (at 5 images
  per class a fifth held out is one image per class: too few to choose by);
* the chosen strength is refitted on the training features alone, so the validation data
  stays unseen by the weights and fit()'s later comparisons on it stay fair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from transferkit.model.class_weights import ClassWeights, Kind

__all__ = ["L2_GRID", "Probe", "fit_probe", "logistic_regression", "probe_loss"]

#: The L2 strengths tried (on standardized features, added to the mean loss as
#: ``l2 / 2 * |W|^2``), strongest first.
L2_GRID = tuple(float(10.0**exponent) for exponent in np.arange(2.5, -4.01, -0.5))
#: Validation images of every class below which the strength is chosen by cross-validation.
MIN_HELD_OUT_PER_CLASS = 5
#: Folds of that cross-validation, at most (fewer when a class has fewer images).
FOLDS = 5
_MAX_ITERATIONS, _MEMORY, _TOLERANCE = 500, 10, 1e-7

Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclass(frozen=True)
class Probe:
    """A fitted probe: Dense weights for the raw pooled features, and how it was chosen.

    Attributes:
        kernel: float32 array of shape ``(features, logits)``.
        bias: float32 array of shape ``(logits,)``.
        l2: the chosen strength.
        held_out: ``"validation"`` or ``"k-fold"``: what chose it.
        losses: the held-out mean log-loss of each strength of :data:`L2_GRID`.
    """

    kernel: np.ndarray
    bias: np.ndarray
    l2: float
    held_out: str
    losses: tuple[float, ...]


def fit_probe(
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    *,
    kind: Kind,
    num_logits: int,
    class_weights: ClassWeights | None = None,
    seed: int = 0,
) -> Probe:
    """Fits L2-regularized logistic regression, its strength chosen on held-out data.

    Args:
        train: training features ``(n, d)`` and targets (class indices, or multi-hot rows).
        validation: the same for the validation data.
        kind: the head's loss: ``"sparse"`` (softmax), ``"binary"`` (one logit) or
            ``"multi_label"``.
        num_logits: the head's outputs (1 for a binary head).
        class_weights: the loss's class weights, or None.
        seed: seeds the cross-validation folds.

    Returns:
        The :class:`Probe`.
    """
    features, targets = np.asarray(train[0], np.float64), np.asarray(train[1])
    held_x, held_y = np.asarray(validation[0], np.float64), np.asarray(validation[1])
    problem = _Problem(kind, num_logits, class_weights)
    if _enough_held_out(held_y, kind):
        losses = _path_losses(problem, (features, targets), (held_x, held_y))
        held_out = "validation"
    else:
        pooled_x, pooled_y = np.concatenate([features, held_x]), np.concatenate([targets, held_y])
        folds = _folds(pooled_y, kind, seed)
        per_fold = [
            _path_losses(
                problem,
                (pooled_x[folds != fold], pooled_y[folds != fold]),
                (pooled_x[folds == fold], pooled_y[folds == fold]),
            )
            for fold in np.unique(folds)
        ]
        losses, held_out = np.mean(per_fold, axis=0), "k-fold"
    best = int(np.argmin(losses))  # the first (strongest) of equal losses
    kernel, bias = _solve(problem, features, targets, L2_GRID[best])  # training data alone
    return Probe(
        kernel.astype(np.float32),
        bias.astype(np.float32),
        L2_GRID[best],
        held_out,
        tuple(float(loss) for loss in losses),
    )


def logistic_regression(
    train: tuple[np.ndarray, np.ndarray],
    *,
    l2: float,
    kind: Kind,
    num_logits: int,
    class_weights: ClassWeights | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fits logistic regression at one L2 strength: Dense weights for the raw features.

    Minimizes the mean (class-weighted) loss of the head plus ``l2 / 2 * |W|^2`` on
    standardized features (the bias is not penalized), as scikit-learn's
    ``LogisticRegression(C=1 / (l2 * n))`` does on standardized features.

    Returns:
        The kernel ``(features, logits)`` and the bias ``(logits,)``, float64.
    """
    problem = _Problem(kind, num_logits, class_weights)
    features = np.asarray(train[0], np.float64)
    return _solve(problem, features, np.asarray(train[1]), l2)


def probe_loss(
    kernel: np.ndarray,
    bias: np.ndarray,
    data: tuple[np.ndarray, np.ndarray],
    *,
    kind: Kind,
    class_weights: ClassWeights | None = None,
) -> float:
    """The mean (class-weighted) cross-entropy of Dense weights on features and targets."""
    problem = _Problem(kind, len(bias), class_weights)
    logits = np.asarray(data[0], np.float64) @ kernel + bias
    return problem.loss(logits, np.asarray(data[1]))[0]


class _Problem:
    """The head's loss on logits and its gradient, for one kind of head."""

    def __init__(self, kind: Kind, num_logits: int, class_weights: ClassWeights | None) -> None:
        self.kind, self.num_logits = kind, num_logits
        self.positive = None if class_weights is None else np.asarray(class_weights.positive)
        negative = None if class_weights is None else class_weights.negative
        self.negative = None if negative is None else np.asarray(negative)

    def loss(self, logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        """The mean loss and its gradient with respect to the logits."""
        count = len(logits)
        if self.kind == "sparse":
            labels = targets.reshape(-1).astype(np.int64)
            weight = np.ones(count) if self.positive is None else self.positive[labels]
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_norm = np.log(np.exp(shifted).sum(axis=1))
            losses = log_norm - shifted[np.arange(count), labels]
            gradient = np.exp(shifted - log_norm[:, None])
            gradient[np.arange(count), labels] -= 1.0
            return float(weight @ losses / count), gradient * (weight / count)[:, None]
        truth = targets.reshape(count, -1).astype(np.float64)
        positive, negative = self._sigmoid_weights(targets, count)
        # softplus(-z) for the positives, softplus(z) for the negatives; stable forms.
        soft_plus = np.logaddexp(0.0, logits)
        losses = positive * truth * (soft_plus - logits) + negative * (1 - truth) * soft_plus
        probability = 0.5 * (1.0 + np.tanh(0.5 * logits))  # the sigmoid, without overflow
        gradient = positive * truth * (probability - 1) + negative * (1 - truth) * probability
        scale = count * truth.shape[1]
        return float(losses.sum() / scale), gradient / scale

    def _sigmoid_weights(self, targets: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        if self.positive is None:
            return np.ones((count, 1)), np.ones((count, 1))
        if self.kind == "binary":  # single-label weights, by each image's class
            weight = self.positive[targets.reshape(-1).astype(np.int64)][:, None]
            return weight, weight
        negative = np.ones_like(self.positive) if self.negative is None else self.negative
        return self.positive[None, :], negative[None, :]


def smallest_class(targets: np.ndarray, kind: Kind) -> int:
    """Images of the rarest class present (positives of the rarest label, multi-label)."""
    if kind == "multi_label":  # positives of each label
        counts = np.asarray(targets).reshape(len(targets), -1).sum(axis=0)
    else:
        counts = np.bincount(np.asarray(targets).reshape(-1).astype(np.int64))
        counts = counts[counts > 0] if counts.size else counts
    return int(counts.min()) if counts.size else 0


def _enough_held_out(targets: np.ndarray, kind: Kind) -> bool:
    return smallest_class(targets, kind) >= MIN_HELD_OUT_PER_CLASS


def _folds(targets: np.ndarray, kind: Kind, seed: int) -> np.ndarray:
    """A fold per image; single-label folds are stratified (each class dealt round-robin)."""
    rng = np.random.default_rng(seed)
    count = len(targets)
    if kind == "multi_label":
        folds = min(FOLDS, count)
        return rng.permutation(np.arange(count) % folds)
    labels = targets.reshape(-1).astype(np.int64)
    folds = max(2, min(FOLDS, int(np.bincount(labels)[np.unique(labels)].min())))
    assignment = np.empty(count, np.int64)
    offset = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        assignment[members] = (offset + np.arange(len(members))) % folds
        offset += len(members)
    return assignment


def _path_losses(
    problem: _Problem,
    train: tuple[np.ndarray, np.ndarray],
    held_out: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """The held-out loss of each strength, solved strongest first, each warm-starting the next."""
    losses, start = [], None
    for l2 in L2_GRID:
        kernel, bias = _solve(problem, *train, l2, start=start)
        start = (kernel, bias)
        logits = held_out[0] @ kernel + bias
        losses.append(problem.loss(logits, held_out[1])[0])
    return np.asarray(losses)


def _solve(
    problem: _Problem,
    features: np.ndarray,
    targets: np.ndarray,
    l2: float,
    *,
    start: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimizes the mean loss plus ``l2 / 2 * |W|^2`` on standardized features."""
    mean, scale = features.mean(axis=0), features.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    standard = (features - mean) / scale
    width, logits = features.shape[1], problem.num_logits

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        kernel, bias = flat[: width * logits].reshape(width, logits), flat[width * logits :]
        value, gradient = problem.loss(standard @ kernel + bias, targets)
        kernel_gradient = standard.T @ gradient + l2 * kernel
        penalty = 0.5 * l2 * float(np.sum(kernel * kernel))
        return value + penalty, np.concatenate([kernel_gradient.ravel(), gradient.sum(axis=0)])

    initial = np.zeros(width * logits + logits)
    if start is not None:  # back from raw-feature weights to standardized ones
        initial[: width * logits] = (start[0] * scale[:, None]).ravel()
        initial[width * logits :] = start[1] + mean @ start[0]
    flat = _lbfgs(objective, initial)
    kernel = flat[: width * logits].reshape(width, logits) / scale[:, None]
    return kernel, flat[width * logits :] - mean @ kernel


def _lbfgs(objective: Objective, start: np.ndarray) -> np.ndarray:
    """Full-batch L-BFGS with a backtracking (Armijo) line search."""
    point = start
    value, gradient = objective(point)
    steps: list[tuple[np.ndarray, np.ndarray, float]] = []
    for _ in range(_MAX_ITERATIONS):
        if float(np.max(np.abs(gradient))) < _TOLERANCE:
            break
        direction = -_two_loop(gradient, steps)
        slope = float(gradient @ direction)
        if slope >= 0:  # not a descent direction: start the memory afresh
            steps, direction = [], -gradient
            slope = float(gradient @ direction)
        length = 1.0 if steps else min(1.0, 1.0 / float(np.sum(np.abs(gradient))))
        while True:
            candidate = point + length * direction
            new_value, new_gradient = objective(candidate)
            if new_value <= value + 1e-4 * length * slope or length < 1e-12:
                break
            length *= 0.5
        moved, change = candidate - point, new_gradient - gradient
        curvature = float(moved @ change)
        if curvature > 1e-12:
            steps = [*steps[-(_MEMORY - 1) :], (moved, change, 1.0 / curvature)]
        converged = value - new_value <= _TOLERANCE * max(1.0, abs(value))
        point, value, gradient = candidate, new_value, new_gradient
        if converged:
            break
    return point


def _two_loop(
    gradient: np.ndarray, steps: list[tuple[np.ndarray, np.ndarray, float]]
) -> np.ndarray:
    """The L-BFGS two-loop recursion: the inverse-Hessian estimate applied to the gradient."""
    direction = gradient.copy()
    alphas = []
    for moved, change, rho in reversed(steps):
        alpha = rho * float(moved @ direction)
        direction -= alpha * change
        alphas.append(alpha)
    if steps:
        moved, change, _ = steps[-1]
        direction *= float(moved @ change) / float(change @ change)
    for (moved, change, rho), alpha in zip(steps, reversed(alphas), strict=True):
        beta = rho * float(change @ direction)
        direction += (alpha - beta) * moved
    return direction
