"""The package's import graph between subpackages, as a Mermaid drawing for docs/architecture.md.

    python -m tests.support.import_graph        # prints the drawing

Each arrow ``a --> b`` says that some module of ``a`` imports some module of ``b``; the
architecture test checks that the drawing in docs/architecture.md is this one.
"""

from __future__ import annotations

import grimp
import networkx as nx

TOP = "fmri_pain"


def module_graph() -> nx.DiGraph:
    """Every direct import between modules of the package (grimp's static analysis)."""
    graph = grimp.build_graph(TOP, cache_dir=None)
    edges = nx.DiGraph()
    for module in graph.modules:
        edges.add_node(module)
        for imported in graph.find_modules_directly_imported_by(module):
            edges.add_edge(module, imported)
    return edges


def room(module: str) -> str:
    """The subpackage (or top-level module) a module lives in: ``glm.first_level``, ``trial``, ..."""
    parts = module.split(".")[1:]
    if parts[:1] == ["glm"] and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0] if parts else TOP


def room_graph(modules: nx.DiGraph) -> nx.DiGraph:
    rooms = nx.DiGraph()
    for a, b in modules.edges:
        ra, rb = room(a), room(b)
        if ra != rb and TOP not in (ra, rb) and "_version" not in (ra, rb):
            rooms.add_edge(ra, rb)
    return rooms


def mermaid(rooms: nx.DiGraph) -> str:
    lines = ["```mermaid", "flowchart TD"]
    for a, b in sorted(nx.transitive_reduction(rooms).edges):
        lines.append(f"  {a.replace('.', '_')}[{a}] --> {b.replace('.', '_')}[{b}]")
    lines.append("```")
    return "\n".join(lines)


if __name__ == "__main__":
    print(mermaid(room_graph(module_graph())))
