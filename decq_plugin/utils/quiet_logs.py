"""Keep the console of a run short; the work dir's log file keeps it all.

MMEngine's runner prints, before the first iteration, the environment, the
whole config and the hook order (about 300 lines), notices about its own
deprecated internals (``FileClient``, ``HardDiskBackend``), a warning for
every metric without a prefix and for datasets without ``metainfo`` (the
class-label dataset of sampling), and an ``Exp name:`` line every epoch. All
of it still goes to ``<work_dir>/<timestamp>/<timestamp>.log``; the console
gets one line saying where that file is.

Stage 1's discriminator optimizer does not step before ``disc_start``, so
its scheduler steps first and PyTorch's ``scheduler.step() before
optimizer.step()`` warning fires on every run; that one warning is
filtered for configs with a discriminator (:func:`quiet_known_warnings`).
"""
import logging
import re
import warnings
from typing import Optional, Sequence

#: Console messages that say nothing a user acts on (regexes, matched at
#: the start of the message).
CONSOLE_ONLY_IN_LOG_FILE: Sequence[str] = (
    r'\n-{20,}\nSystem environment',
    r'Config:\n',
    r'Hooks will be executed in the following order',
    r'Exp name: ',
    r'The prefix is not set in metric class',
    r'"FileClient" will be deprecated',
    r'"HardDiskBackend" is the alias of "LocalBackend"',
    r'Distributed training is not used, all SyncBatchNorm',
    r'Dataset \w+ has no metainfo',
)
SCHEDULER_ORDER_NOTICE = r'Detected call of `scheduler.step\(\)` before'


class LogFileOnly(logging.Filter):
    """Drops the records of :data:`CONSOLE_ONLY_IN_LOG_FILE` (for a console
    handler; the file handler keeps them)."""

    def __init__(self, patterns: Sequence[str] = CONSOLE_ONLY_IN_LOG_FILE):
        super().__init__()
        self.pattern = re.compile('|'.join(f'(?:{p})' for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return self.pattern.match(record.getMessage()) is None


def log_file_of(logger: logging.Logger) -> Optional[str]:
    """The file a logger writes to (None: console only, e.g. rank > 0)."""
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None


def quiet_console(logger: logging.Logger) -> None:
    """Add :class:`LogFileOnly` to the console handlers of ``logger`` and
    say on the console where the full log is."""
    for handler in logger.handlers:
        if (isinstance(handler, logging.StreamHandler) and
                not isinstance(handler, logging.FileHandler) and
                not any(isinstance(f, LogFileOnly) for f in handler.filters)):
            handler.addFilter(LogFileOnly())
    path = log_file_of(logger)
    if path is not None:
        logger.info(f'environment, config and hook order: {path}')


def quiet_known_warnings(has_discriminator: bool) -> None:
    """Filter the scheduler-order warning that a discriminator optimizer
    idle before ``disc_start`` raises (only then: elsewhere it can mean a
    real mistake)."""
    if has_discriminator:
        warnings.filterwarnings('ignore', message=SCHEDULER_ORDER_NOTICE,
                                category=UserWarning)


def quiet_runner_class():
    """MMEngine's ``Runner`` whose logger keeps its console short."""
    from mmengine.runner import Runner

    class QuietConsoleRunner(Runner):
        """``Runner`` with :func:`quiet_console` applied to its logger."""

        def build_logger(self, *args, **kwargs):
            logger = super().build_logger(*args, **kwargs)
            quiet_console(logger)
            return logger

    return QuietConsoleRunner
