"""What a run shows while it trains: the smoothed loss on the progress bar and the epoch table."""
from tqdm.auto import tqdm

__all__ = ["SmoothedLoss", "print_epoch"]

# The epoch table: (history key, heading, format); 80 columns at most.
# "train" and "valid" are the two losses; "acc" pixel accuracy, "fg acc" foreground accuracy.
_TABLE = (("train_loss", "train", ".4f"), ("valid_loss", "valid", ".4f"),
          ("pixel_accuracy", "acc", ".4f"), ("foreground_accuracy", "fg acc", ".4f"),
          ("mean_iou", "mIoU", ".4f"), ("mean_dice", "mDice", ".4f"), ("lr", "lr", ".1e"),
          ("seconds", "time s", ".1f"))


class SmoothedLoss:
    """Exponential moving average of the loss, debiased (fastai's display): β·avg + (1-β)·loss."""

    def __init__(self, beta=0.98):
        self.beta, self.average, self.count = beta, 0.0, 0

    def add(self, value):
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * value
        return self.value

    @property
    def value(self):
        return self.average / (1 - self.beta ** self.count)


def print_epoch(record, header):
    """One row of the epoch table for a history ``record`` (after the headings when ``header``)."""
    columns = [(key, heading, spec) for key, heading, spec in _TABLE if key in record]
    if header:
        tqdm.write("epoch " + " ".join(f"{heading:>{max(len(heading), 7)}}" for _, heading, _ in columns))
    values = " ".join(f"{record[key]:>{max(len(heading), 7)}{spec}}" for key, heading, spec in columns)
    tqdm.write(f"{record['epoch']:>5} {values}")
