"""Time is injected: everything that reads the time takes a Clock, so tests control it and never sleep."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Seconds since the epoch, as ``time.time`` gives them."""

system_clock: Clock = time.time
