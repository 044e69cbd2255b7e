"""Answering an event loop's futures from Parsl's threads."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)


def call_soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    """Run ``callback`` on ``loop`` from another thread, unless the loop is gone."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        logger.debug('event loop closed; %s not called', callback)


def resolve(future: asyncio.Future[Any], value: Any) -> None:
    """Resolve ``future`` with ``value`` unless it is done already."""
    if not future.done():
        future.set_result(value)


def reject(future: asyncio.Future[Any], error: BaseException) -> None:
    """Fail ``future`` with ``error`` unless it is done already."""
    if not future.done():
        future.set_exception(error)
