"""Resuming on another process count: refused unless the config opts in.

A checkpoint of :class:`~decq_plugin.engine.hooks.ResumableCheckpointHook`
holds one random state per process, so it knows how many processes wrote
it. A resume with the same count continues exactly (bit-identically on the
same hardware). With another count it cannot:

* the global batch is ``batch_size x processes``: an epoch has another
  number of iterations and each optimizer step averages another number of
  samples (the learning rate is not rescaled unless ``auto_scale_lr`` is
  enabled);
* the iteration counter and every iteration-based schedule (the configs'
  ``convert_to_iter_based`` learning-rate schedules, iteration intervals of
  hooks) go on in the *saved* run's iterations: a schedule converted from
  epochs then advances ``saved / new`` of the saved run's epochs per epoch;
* the random streams differ (rank ``r`` takes saved state ``r mod saved``).

So :func:`check_process_count` refuses it, naming what to do, unless the
config sets ``allow_process_count_change = True``. What then carries over
exactly: the weights, the EMA weights, the optimizer state (AdamW's moments
and step counts), the epoch, the iteration counter's value, and the data
order of the following epochs (``SeededSampler``/``DefaultSampler`` shuffle
one global permutation per (seed, epoch) and deal it out to the ranks, and
each sample's augmentation is seeded by (seed, epoch, index): an epoch
visits the same samples, in the same global order, with the same
augmentation, grouped into global batches of another size). This holds for
epoch-based loops resumed at an epoch end, which is where the shipped
configs write checkpoints; an iteration-based loop skips the saved number
of iterations of the new loader, which is another number of samples.
"""
import logging

from mmengine.logging import print_log

ALLOW_COUNT_CHANGE_KEY = 'allow_process_count_change'


class ProcessCountChangeError(RuntimeError):
    """A resume on another process count than the one that saved."""


def check_process_count(cfg, saved: int, count: int) -> None:
    """Raise :class:`ProcessCountChangeError` when ``count`` (this run's
    processes) differs from ``saved`` (the checkpoint's) and ``cfg`` does
    not set ``allow_process_count_change``; with it, log what changes."""
    if saved == count:
        return
    what = (f'the resumed checkpoint was written by a run of {saved} '
            f'process(es), this run has {count}')
    if not bool(cfg.get(ALLOW_COUNT_CHANGE_KEY, False)):
        raise ProcessCountChangeError(
            f'{what}. To continue exactly, resume with {saved} processes '
            f'(tools/dist_train.sh CONFIG {saved} --resume, or NNODES x '
            f'GPUS = {saved}). To resume anyway, set '
            f'{ALLOW_COUNT_CHANGE_KEY} = True in the config (or '
            f'--cfg-options {ALLOW_COUNT_CHANGE_KEY}=True): weights, EMA, '
            'optimizer state and epoch carry over, but the global batch '
            'changes and the iteration counter and iteration-based '
            "schedules go on in the saved run's iterations (README: "
            '"Several GPUs and several nodes"). Or start a new run from the '
            'weights alone: --cfg-options load_from=CHECKPOINT, no --resume.')
    print_log(f'{what} ({ALLOW_COUNT_CHANGE_KEY}=True): rank r takes random '
              f'state r mod {saved}; the global batch changes and '
              "iteration-based schedules go on in the saved run's "
              'iterations', logger='current', level=logging.WARNING)
