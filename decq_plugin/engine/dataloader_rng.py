"""The one number a PyTorch ``DataLoader`` draws from the global RNG, and
when: each new iterator draws its ``_base_seed`` (one int64 ``random_``
from ``loader.generator``, the global torch RNG when that is None).

* Without persistent workers every epoch makes a new iterator: one draw at
  each epoch start.
* With persistent workers only the first iteration of a loader makes one;
  later epochs reset it (no draw).

A resumed run restores the random states saved with the checkpoint and
must then draw exactly what the uninterrupted run drew after that save;
:func:`settle_before_restore` and :func:`replay_after_restore` line the
loader's draw up with it.
"""
import torch
from torch.utils.data import DataLoader


def _persistent(loader: DataLoader) -> bool:
    return bool(getattr(loader, 'persistent_workers', False)) and \
        getattr(loader, 'num_workers', 0) > 0


def settle_before_restore(loader: DataLoader) -> None:
    """Epoch-based resume: a persistent-worker loader's first iteration
    draws; the uninterrupted run drew at its first epoch, long before the
    save. Start the iterator now, before the saved state is restored, so
    the resumed epoch does not draw an extra number."""
    if isinstance(loader, DataLoader) and _persistent(loader):
        iter(loader)


def replay_after_restore(loader: DataLoader, batches_done: int) -> None:
    """Iteration-based resume after ``batches_done`` batches: when that is
    a whole number of epochs, the uninterrupted run made a new iterator for
    the next epoch after the save (one draw, without persistent workers);
    the resumed run made it before the state was restored, so draw it
    again."""
    if not isinstance(loader, DataLoader) or _persistent(loader):
        return
    try:
        per_epoch = len(loader)
    except TypeError:  # an iterable dataset without a length
        return
    if batches_done > 0 and per_epoch > 0 and batches_done % per_epoch == 0:
        torch.empty((), dtype=torch.int64).random_(
            generator=loader.generator)
