"""Unexpected errors inside library calls are alerted once, then re-raised unchanged.

phasegate raises :class:`~phasegate.errors.PhasegateError` on purpose, and alerts the
failures behind them where they happen. Anything else escaping a public entry point (a
bug, a driver failing in a way no store maps) is a failure nobody planned for: the
:func:`alerts_unexpected` guard on each entry point logs it CRITICAL with its traceback,
emits a critical ``unexpected_error`` event (the alert carries the traceback) and
re-raises the very same exception.

One failure, one alert: only the outermost guard of a call announces (an entry point
calling another), and an exception an event already carried is not announced again (see
:func:`phasegate.events.was_announced`), so the service's own handler stays silent
about an error the library call announced.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar, cast

from phasegate.errors import PhasegateError
from phasegate.events import Event, EventBus, EventKind, Severity, was_announced

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

BusOf = Callable[[Any], "EventBus | None"]

_DEPTH: ContextVar[int] = ContextVar("phasegate_guard_depth", default=0)


def _own_events(owner: Any) -> EventBus | None:
    """The ``events`` bus of the call's first argument (``self``, or an orchestrator)."""
    events = getattr(owner, "events", None)
    return events if isinstance(events, EventBus) else None


def announce_unexpected(error: Exception, component: str, call: str, events: EventBus) -> None:
    """Log ``error`` CRITICAL with its traceback and emit it as ``unexpected_error``."""
    if was_announced(error):
        return
    message = f"unexpected {type(error).__name__} in {call}: {error}"
    log.critical("%s: %s", component, message, exc_info=error)
    events.emit(
        Event(EventKind.UNEXPECTED_ERROR, Severity.CRITICAL, component, message, error=error),
        already_logged=True,
    )


def alerts_unexpected(
    component: str, *, events: BusOf = _own_events
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a public entry point (function, method or coroutine function) so that an
    exception other than a PhasegateError is announced (see the module docstring).

    ``events`` finds the bus from the call's first argument (default: its ``events``).
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        call = fn.__qualname__

        def announce(args: tuple[Any, ...], error: Exception) -> None:
            bus = events(args[0]) if args else None
            if bus is not None:
                announce_unexpected(error, component, call, bus)

        if inspect.iscoroutinefunction(fn):
            coroutine = fn

            @functools.wraps(fn)
            async def guarded_coroutine(*args: P.args, **kwargs: P.kwargs) -> Any:
                outermost = _DEPTH.get() == 0
                token = _DEPTH.set(_DEPTH.get() + 1)
                try:
                    return await coroutine(*args, **kwargs)
                except PhasegateError:
                    raise
                except Exception as error:
                    if outermost:
                        announce(args, error)
                    raise
                finally:
                    _DEPTH.reset(token)

            return cast(Callable[P, R], guarded_coroutine)

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            outermost = _DEPTH.get() == 0
            token = _DEPTH.set(_DEPTH.get() + 1)
            try:
                return fn(*args, **kwargs)
            except PhasegateError:
                raise
            except Exception as error:
                if outermost:
                    announce(args, error)
                raise
            finally:
                _DEPTH.reset(token)

        return guarded

    return decorate
