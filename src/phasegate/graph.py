"""The phases of a pipeline as a directed acyclic graph: fan-out, fan-in, readiness.

A phase names the phases it triggers (``next``). A phase with several upstream
phases is *ready* for a run only once every one of them has triggered for it, so a
downstream runner starts it exactly once. :class:`PhaseGraph` is built once per
pipeline, checks the links (unknown names, a phase triggering itself, cycles,
phases no root reaches) and answers the graph questions the orchestrator asks.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from phasegate.errors import ConfigError


class GraphError(ConfigError):
    """The ``next`` links do not form a valid graph.

    ``phases`` names every phase involved; ``at`` is the phase whose ``next`` is wrong
    when the mistake sits in one phase (an unknown name, a self-link), else ``None``.
    """

    def __init__(self, message: str, phases: Sequence[str], at: str | None = None) -> None:
        super().__init__(message)
        self.phases = tuple(phases)
        self.at = at


@dataclass(frozen=True, slots=True)
class PhaseGraph:
    """The validated ``next`` links of a pipeline, in file order."""

    order: tuple[str, ...]
    links: Mapping[str, tuple[str, ...]]
    _upstream: Mapping[str, tuple[str, ...]] = field(repr=False, compare=False)
    _descendants: Mapping[str, tuple[str, ...]] = field(repr=False, compare=False)

    @classmethod
    def build(cls, links: Sequence[tuple[str, Sequence[str]]]) -> PhaseGraph:
        """Validate ``(phase, next phases)`` pairs in file order; raise :class:`GraphError`."""
        order = tuple(name for name, _ in links)
        downstream = {name: tuple(targets) for name, targets in links}
        _check_links(order, downstream)
        upstream: dict[str, list[str]] = {name: [] for name in order}
        for name in order:
            for target in downstream[name]:
                upstream[target].append(name)
        _check_acyclic(order, downstream, upstream)
        descendants = {name: _reachable(order, downstream, [name]) for name in order}
        return cls(
            order=order,
            links=MappingProxyType(downstream),
            _upstream=MappingProxyType({k: tuple(v) for k, v in upstream.items()}),
            _descendants=MappingProxyType(descendants),
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Read-only mappings do not pickle; a worker process rebuilds the graph instead.
        return (PhaseGraph.build, ([(name, self.links[name]) for name in self.order],))

    def downstream(self, phase: str) -> tuple[str, ...]:
        """The phases ``phase`` triggers directly, as its ``next`` lists them."""
        return self.links[phase]

    def upstream(self, phase: str) -> tuple[str, ...]:
        """The phases that name ``phase`` as next, in file order."""
        return self._upstream[phase]

    def descendants(self, phase: str) -> tuple[str, ...]:
        """Every phase downstream of ``phase``, transitively, in file order."""
        return self._descendants[phase]

    def roots(self) -> tuple[str, ...]:
        """The phases with no upstream phase: where a run starts."""
        return tuple(name for name in self.order if not self._upstream[name])

    def ready_after(self, phase: str, triggered: Collection[str]) -> tuple[str, ...]:
        """The phases downstream of ``phase`` that are ready once ``phase`` has triggered.

        ``triggered`` holds the phases already triggered for the run (at the attempts
        that count); ``phase`` itself counts as triggered.
        """
        done = {*triggered, phase}
        return tuple(
            target
            for target in self.links[phase]
            if all(source in done for source in self._upstream[target])
        )


def _check_links(order: Sequence[str], downstream: Mapping[str, Sequence[str]]) -> None:
    known = set(order)
    for name in order:
        seen: set[str] = set()
        for target in downstream[name]:
            if target == name:
                raise GraphError(f"phase {name!r} cannot trigger itself", [name], at=name)
            if target not in known:
                raise GraphError(
                    f"unknown phase {target!r} (known: {', '.join(order)})", [name], at=name
                )
            if target in seen:
                raise GraphError(f"phase {target!r} is listed twice", [name, target], at=name)
            seen.add(target)


def _check_acyclic(
    order: Sequence[str],
    downstream: Mapping[str, Sequence[str]],
    upstream: Mapping[str, Sequence[str]],
) -> None:
    cycle = _find_cycle(order, downstream)
    if cycle is None:
        # In an acyclic graph every phase is reachable from a root; a phase that is not
        # lies on or behind a cycle, so one error names both.
        return
    roots = [name for name in order if not upstream[name]]
    reached = set(_reachable(order, downstream, roots)) | set(roots)
    stranded = [name for name in order if name not in reached]
    message = f"the 'next' links form a cycle: {' -> '.join(cycle)}"
    if stranded:
        message += f"; no root phase reaches {', '.join(stranded)}"
    if not roots:
        message += " (every phase has an upstream phase, so none can start)"
    raise GraphError(message, sorted({*cycle, *stranded}))


def _find_cycle(order: Sequence[str], downstream: Mapping[str, Sequence[str]]) -> list[str] | None:
    """The first cycle met by a depth-first walk in file order, closed (``a -> b -> a``)."""
    finished: set[str] = set()
    for start in order:
        if start in finished:
            continue
        path: list[str] = [start]
        on_path = {start}
        stack: list[Iterator[str]] = [iter(downstream[start])]
        while stack:
            target = next(stack[-1], None)
            if target is None:
                stack.pop()
                finished.add(path[-1])
                on_path.discard(path.pop())
                continue
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in finished:
                path.append(target)
                on_path.add(target)
                stack.append(iter(downstream[target]))
    return None


def _reachable(
    order: Sequence[str], downstream: Mapping[str, Sequence[str]], starts: Iterable[str]
) -> tuple[str, ...]:
    """Phases reachable from ``starts`` by one or more links, in file order."""
    found: set[str] = set()
    pending = [target for start in starts for target in downstream[start]]
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending.extend(downstream[name])
    return tuple(name for name in order if name in found)
