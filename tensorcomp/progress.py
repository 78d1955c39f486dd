"""What a long ``complete()`` shows while it runs: a tqdm bar (after a few seconds only) and
``logging`` records on the "tensorcomp" logger. ``verbose=True`` attaches a stderr handler to
that logger when the application configured none."""
from __future__ import annotations

import logging
import sys

__all__ = ["logger", "Progress", "PROGRESS_DELAY_S", "ensure_log_handler"]

logger = logging.getLogger("tensorcomp")
#: the bar appears only for runs longer than this
PROGRESS_DELAY_S = 3.0


def ensure_log_handler() -> None:
    """``verbose=True``: make the "tensorcomp" logger's INFO records visible on stderr when
    the application configured no logging of its own."""
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[tensorcomp] %(message)s"))
        logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


class Progress:
    """One bar per ``complete()`` call, counting fits (its total grows as stages are planned).
    ``show``: True, False, or None (show when stderr is a terminal); ``quiet``: no log records
    either (the kernel warm-up)."""

    def __init__(self, show: bool | None, verbose: bool, time_limit_s: float | None,
                 quiet: bool = False) -> None:
        self.quiet = quiet
        if verbose:
            ensure_log_handler()
        if show is None:
            show = sys.stderr.isatty()
        self._bar = None
        if show:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=None, unit="fit", delay=PROGRESS_DELAY_S, leave=False,
                             desc="tensorcomp", dynamic_ncols=True)
        self.limit = time_limit_s

    def step(self, stage: str, text: str) -> None:
        if self.quiet:
            return
        logger.info("%s: %s", stage, text)
        if self._bar is not None:
            self._bar.set_description(f"tensorcomp {stage}", refresh=False)
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
