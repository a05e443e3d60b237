"""Progress bars, the same everywhere: tqdm on a terminal, and in a batch job's log (standard error not a
terminal, where tqdm would stay silent until the end) a line at most once a minute."""
from __future__ import annotations

import sys
from typing import Iterable, Optional

#: Seconds between progress lines when standard error is not a terminal.
LOG_INTERVAL = 60.0


def progress_bar(iterable: Optional[Iterable] = None, enabled: Optional[bool] = None, **options):
    """A tqdm bar over ``iterable`` (or to ``update`` by hand); ``enabled=False`` hides it, ``None`` or True
    shows it: as usual on a terminal, as a line every :data:`LOG_INTERVAL` seconds in a log."""
    from tqdm.auto import tqdm
    if enabled is False:
        return tqdm(iterable, disable=True, **options)
    if not sys.stderr.isatty():
        options = {"mininterval": LOG_INTERVAL, "maxinterval": LOG_INTERVAL, "ascii": True, **options}
    return tqdm(iterable, disable=False, **options)


__all__ = ["LOG_INTERVAL", "progress_bar"]
