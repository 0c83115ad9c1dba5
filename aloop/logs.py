"""Library warnings and log records kept off the terminal: written to a run's log file and counted.

A round prints its stage lines, progress bars and summary; pymatgen's CIF parser, the torch
warning raised inside CHGNet and MLflow's loggers would bury them. ``library_log`` sends, for
the block, Python warnings and log records to a ``LibraryLog`` file, then puts warnings and
logging back as they were, also on errors. Warnings are caught by swapping the process-wide
``warnings.showwarning`` (``warnings.catch_warnings`` is not thread-safe), so those raised in
the oracle's worker threads are caught too. aloop's own warnings and log records stay on the
terminal; ``verbose`` leaves the libraries' there as well.

Example:
    >>> with library_log() as log:  # doctest: +SKIP
    ...     log.open(Path(".aloop/default/round-1/round.log"))
    ...     run()
    >>> print(log.summary())  # doctest: +SKIP
    12 library warnings in .aloop/default/round-1/round.log
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

OWN_PACKAGES = ("aloop", "oracles")
"""Loggers and source folders whose warnings and records are aloop's own, shown on the terminal."""
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MLFLOW_PROGRESS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
"""MLflow draws a progress bar for each artifact it reads back (a model's input example): off unless verbose."""


class LibraryLog(logging.Handler):
    """A log file that counts library warnings (Python warnings and library records at WARNING or above).

    Records that arrive before ``open`` (a round learns its folder only after it has started)
    are kept and written first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(FORMAT))
        self.path: Path | None = None
        self.warnings = 0
        self.early: list[str] = []
        self._file: TextIO | None = None

    def open(self, path: Path) -> None:
        """Write to ``path`` from now on, appending (a resumed round adds to its log)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self._file = path.open("a", encoding="utf-8")
            self.path = path
            self._file.writelines(f"{line}\n" for line in self.early)
            self._file.flush()
            self.early.clear()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        if record.levelno >= logging.WARNING and not _own_logger(record.name):
            self.warnings += 1
        if self._file is None:
            self.early.append(line)
            return
        self._file.write(f"{line}\n")
        self._file.flush()

    def close(self) -> None:
        with self.lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        super().close()

    def summary(self) -> str:
        """One line for the terminal, e.g. ``12 library warnings in .aloop/default/round-1/round.log``."""
        return f"{self.warnings} library warning{'' if self.warnings == 1 else 's'} in {self.path}"


@contextmanager
def library_log(*, verbose: bool = False) -> Iterator[LibraryLog]:
    """Send Python warnings and log records to the ``LibraryLog`` yielded (``open`` it at a path) for the block.

    Args:
        verbose: also show the libraries' warnings and records on the terminal, as without this block.

    Records kept before ``open`` are printed to stderr on exit if it never came (the run
    stopped first), unless ``verbose`` showed them already.
    """
    log = LibraryLog()
    restore_logging = _redirect_logging(log, verbose=verbose)
    shown = warnings.showwarning
    own_folders = _own_folders()

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: TextIO | None = None,
             line: str | None = None) -> None:
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        own = filename.startswith(own_folders)
        log.handle(logging.LogRecord("aloop.warnings" if own else "py.warnings", logging.WARNING, filename, lineno,
                                     text, None, None))
        if verbose or own:
            shown(message, category, filename, lineno, file, line)

    progress = os.environ.get(MLFLOW_PROGRESS)
    if not verbose:
        os.environ[MLFLOW_PROGRESS] = progress or "false"
    warnings.showwarning = show
    try:
        yield log
    finally:
        warnings.showwarning = shown
        restore_logging()
        if progress is None:
            os.environ.pop(MLFLOW_PROGRESS, None)
        log.close()
        if log.path is None and log.early and not verbose:
            sys.stderr.writelines(f"{line}\n" for line in log.early)


def _redirect_logging(log: LibraryLog, *, verbose: bool) -> Callable[[], None]:
    """Attach ``log`` to the root logger and to loggers that print on their own (MLflow's); unless
    ``verbose``, take their console handlers off, keeping aloop's own records on stderr. Returns the undo."""
    root = logging.getLogger()
    loggers = [root] + [logger for logger in logging.Logger.manager.loggerDict.values()
                        if isinstance(logger, logging.Logger) and _console_handlers(logger)]
    before = {logger: list(logger.handlers) for logger in loggers}
    for logger in loggers:
        if not verbose:
            for handler in _console_handlers(logger):
                logger.removeHandler(handler)
        if logger is root or not logger.propagate:
            logger.addHandler(log)
    terminal = None
    if not (verbose and before[root]):  # what logging.lastResort would have printed: aloop's own only unless verbose
        terminal = logging.StreamHandler(sys.stderr)
        terminal.setLevel(logging.WARNING)
        if not verbose:
            terminal.addFilter(lambda record: _own_logger(record.name))
        root.addHandler(terminal)

    def undo() -> None:
        for logger, handlers in before.items():
            logger.handlers = handlers + [h for h in logger.handlers if h not in handlers and h not in (log, terminal)]

    return undo


def _console_handlers(logger: logging.Logger) -> list[logging.Handler]:
    """Handlers printing to a stream (``StreamHandler`` itself; its subclasses write files or capture)."""
    return [handler for handler in logger.handlers if type(handler) is logging.StreamHandler]


def _own_logger(name: str) -> bool:
    return name.partition(".")[0] in OWN_PACKAGES


def _own_folders() -> tuple[str, ...]:
    """Source folders of aloop's packages (``aloop`` and its sibling ``oracles``): warnings issued from them are
    aloop's own. Found by path, not by importing ``oracles``: under pytest the test folder ``tests/oracles``
    may shadow it as a namespace package."""
    here = Path(__file__).resolve().parent
    return tuple(f"{folder}{os.sep}" for folder in (here, here.parent / "oracles"))
