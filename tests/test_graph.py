"""The phase graph: fan-out, fan-in, readiness and the mistakes it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phasegate.graph import GraphError, PhaseGraph

DIAMOND = [("a", ["b", "c"]), ("b", ["d"]), ("c", ["d"]), ("d", [])]


def test_a_fan_in_phase_is_ready_only_after_every_upstream_phase() -> None:
    """In a → b, c → d, d is ready after whichever of b and c triggers last, never before."""
    graph = PhaseGraph.build(DIAMOND)
    assert graph.ready_after("a", set()) == ("b", "c")
    assert graph.ready_after("b", {"a"}) == ()
    assert graph.ready_after("c", {"a", "b"}) == ("d",)
    assert graph.ready_after("b", {"a", "c"}) == ("d",)
    assert graph.ready_after("d", {"a", "b", "c"}) == ()


def test_the_graph_answers_in_file_order() -> None:
    """Upstream, downstream, descendants and roots keep the order of the pipeline file."""
    graph = PhaseGraph.build([("x", ["z"]), ("a", ["z", "m"]), ("m", []), ("z", [])])
    assert graph.roots() == ("x", "a")
    assert graph.upstream("z") == ("x", "a")
    assert graph.downstream("a") == ("z", "m")
    assert graph.descendants("a") == ("m", "z")
    assert graph.descendants("m") == ()


@pytest.mark.parametrize(
    ("links", "message", "phases", "at"),
    [
        ([("a", ["a"])], "phase 'a' cannot trigger itself", ("a",), "a"),
        ([("a", ["q"])], r"unknown phase 'q' \(known: a\)", ("a",), "a"),
        ([("a", ["b", "b"]), ("b", [])], "phase 'b' is listed twice", ("a", "b"), "a"),
        (
            [("r", ["a"]), ("a", ["b"]), ("b", ["c"]), ("c", ["a"])],
            r"cycle: a -> b -> c -> a$",
            ("a", "b", "c"),
            None,
        ),
        (
            [("r", []), ("a", ["b"]), ("b", ["a", "c"]), ("c", [])],
            r"cycle: a -> b -> a; no root phase reaches a, b, c$",
            ("a", "b", "c"),
            None,
        ),
    ],
    ids=["self-link", "unknown", "twice", "cycle-behind-root", "stranded"],
)
def test_bad_links_raise_an_error_naming_the_phases(
    links: list[tuple[str, list[str]]], message: str, phases: tuple[str, ...], at: str | None
) -> None:
    """Each mistake names every phase involved, and the phase at fault when there is one."""
    with pytest.raises(GraphError, match=message) as info:
        PhaseGraph.build(links)
    assert info.value.phases == phases
    assert info.value.at == at


@st.composite
def dags(draw: st.DrawFn) -> list[tuple[str, list[str]]]:
    """Random acyclic graphs: links only go from a phase to a later one."""
    size = draw(st.integers(1, 12))
    names = [f"p{i}" for i in range(size)]
    return [
        (name, draw(st.lists(st.sampled_from(names[i + 1 :]), unique=True)) if i + 1 < size else [])
        for i, name in enumerate(names)
    ]


@given(dags(), st.data())
def test_acyclic_graphs_build_and_any_back_link_is_refused(
    links: list[tuple[str, list[str]]], data: st.DataObject
) -> None:
    """Every DAG builds with every phase reachable from a root; a link back up is a cycle."""
    graph = PhaseGraph.build(links)
    reached = set(graph.roots())
    for root in graph.roots():
        reached.update(graph.descendants(root))
    assert reached == set(graph.order)
    sources = [name for name in graph.order if graph.descendants(name)]
    if not sources:
        return
    top = data.draw(st.sampled_from(sources))
    bottom = data.draw(st.sampled_from(graph.descendants(top)))
    looped = [(name, [*targets, top] if name == bottom else targets) for name, targets in links]
    with pytest.raises(GraphError, match="cycle") as info:
        PhaseGraph.build(looped)
    assert {top, bottom} <= set(info.value.phases)
