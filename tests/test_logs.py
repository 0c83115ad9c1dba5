"""Library warnings and log records go to the run's log file, counted, and off the terminal unless verbose."""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from pathlib import Path

import pytest

from aloop.logs import library_log


def warn_in_thread(text: str) -> None:
    """A library warning raised in a worker thread, as CHGNet's torch warning is in the oracle's executor."""
    thread = threading.Thread(target=lambda: warnings.warn(text, UserWarning, stacklevel=1))
    thread.start()
    thread.join()


class Stderr:
    """Writes to whatever ``sys.stderr`` is at the time, as MLflow's logging stream does."""

    def write(self, text: str) -> None:
        sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture
def printing_library() -> logging.Logger:
    """A library logger with its own console handler and no propagation, as MLflow configures its loggers."""
    logger = logging.getLogger("printinglib")
    handler = logging.StreamHandler(Stderr())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger
    logger.removeHandler(handler)


def test_library_warnings_and_records_go_to_the_file_and_are_counted(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                      printing_library: logging.Logger) -> None:
    shown = warnings.showwarning
    path = tmp_path / "round-1" / "round.log"
    with library_log() as log:
        warn_in_thread("fractional coordinates rounded (before open)")
        log.open(path)
        warn_in_thread("converting a tensor with requires_grad=True")
        printing_library.info("validating input example")
        printing_library.warning("a library's own warning")
        logging.getLogger("aloop.store.lock").warning("took over the round lock")
    text = path.read_text()
    terminal = capsys.readouterr().err
    assert "fractional coordinates rounded" in text and "requires_grad" in text
    assert "validating input example" in text and "a library's own warning" in text
    assert text.index("fractional") < text.index("requires_grad")  # kept until open, then written first
    assert "rounded" not in terminal and "requires_grad" not in terminal and "library's own" not in terminal
    assert "took over the round lock" in terminal and "took over the round lock" in text  # aloop's own
    assert log.warnings == 3  # two Python warnings and the library's WARNING record; not INFO, not aloop's
    assert log.summary() == f"3 library warnings in {path}"
    assert warnings.showwarning is shown
    printing_library.warning("after the block")
    assert "after the block" in capsys.readouterr().err and "after the block" not in path.read_text()


def test_verbose_shows_them_on_the_terminal_and_still_logs_them(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                printing_library: logging.Logger) -> None:
    shown: list[str] = []  # what shows warnings outside the block: the terminal, or pytest's recorder here
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args: shown.append(str(message)))
    with library_log(verbose=True) as log:
        log.open(tmp_path / "round.log")
        warn_in_thread("verbose: coordinates rounded")
        printing_library.warning("verbose: a library warning")
    terminal, text = capsys.readouterr().err, (tmp_path / "round.log").read_text()
    assert shown == ["verbose: coordinates rounded"] and "verbose: coordinates rounded" in text
    assert "verbose: a library warning" in terminal and "verbose: a library warning" in text
    assert log.warnings == 2


def test_warnings_and_logging_are_restored_after_an_error(capsys: pytest.CaptureFixture,
                                                          printing_library: logging.Logger) -> None:
    shown, handlers = warnings.showwarning, list(printing_library.handlers)
    with pytest.raises(RuntimeError), library_log():
        warn_in_thread("raised before the log had a path")
        raise RuntimeError("the round stopped")
    assert warnings.showwarning is shown and printing_library.handlers == handlers
    assert "raised before the log had a path" in capsys.readouterr().err  # never opened: not lost
