"""When training stops: ``TrainingDiverged``, raised before a non-finite step touches the weights.

``Learner.batch_loss`` checks every batch once, in one place: the model's output (a loss refuses
non-finite logits with an argument error, so they are named before the loss is called) and the loss
scalar (``math.isfinite``). The message says where (epoch, training or validation step, lr), what was
kept (the last good checkpoint) and what to try (a lower learning rate).
"""

__all__ = ["TrainingDiverged", "QUIET_OVERFLOW"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the weights were not updated with it."""


# Diverging weights overflow inside the forward pass; the Learner reports that once, in words,
# instead of NumPy printing "overflow encountered" warnings first (np.errstate(**QUIET_OVERFLOW)).
QUIET_OVERFLOW = dict(over="ignore", invalid="ignore", divide="ignore", under="ignore")
