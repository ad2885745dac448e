"""Where to draw a plate model: node positions, edges and nested plate boxes.

:func:`plate_layout` is pure (no Panel, HoloViews or Bokeh), so it is testable
headless and shared by the diagram view and the visual model builder. It never
raises: a model being edited (an unknown parent or plate, a cycle, a parameter that
does not parse yet) is drawn as far as it can be.

How it lays out:

- **Layers.** A variable's layer is the length of the longest path to it from a root
  of the parent graph (edges closing a cycle are ignored for this). Layer 0 is on
  top; ``y = -layer * LAYER_GAP``, so y grows upward as in a plot. A covariate sits
  one layer above its first child, next to what it feeds, rather than on top.
- **Plates as nested blocks.** A node belongs to the deepest of its known plates and,
  through ``nested_in``, to all the plates that one nests in. Each plate is a block
  holding its own nodes and the blocks of the plates nested in it; blocks are packed
  left to right, and an item shares x with another only when their y extents are
  apart. So every node lies inside the boxes of all its plates and outside the
  others, nested boxes lie inside their outer box, and siblings never overlap.
- **Limits.** Crossed plates (a variable in two plates neither of which nests in the
  other) cannot all be drawn as boxes around it: it is drawn in its deepest plate.
  A plate holding no node yet is drawn as an empty box in layer 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pavi_viz.model.expressions import FUNCTIONS, ExpressionError, parse
from pavi_viz.model.spec import PlateModel

#: Vertical distance between layers and least horizontal width of a node's slot (data units).
LAYER_GAP = 1.2
SLOT_WIDTH = 1.0
#: A node's radius, and the room under it for its name.
NODE_RADIUS = 0.24
NAME_HEIGHT = 0.2
#: Margin of a plate box around its content: left, right and top; bottom (holds the label).
BOX_PAD = 0.12
LABEL_PAD = 0.22
#: Estimated width of one character of a name or label (the diagram draws about 80
#: pixels per unit, text at 9pt), so that names neither overlap nor outgrow their box.
CHAR_WIDTH = 0.085
#: Smallest vertical gap between items packed in the same column.
MIN_GAP = 0.1

LATENT, OBSERVED, COVARIATE = "latent", "observed", "covariate"

_NAME = re.compile(r"[A-Za-z_]\w*")


@dataclass(frozen=True)
class Node:
    """A variable or covariate: its centre, kind and the plates it is drawn in (outer first)."""

    name: str
    kind: str  # LATENT, OBSERVED or COVARIATE
    x: float
    y: float
    layer: int
    plates: tuple[str, ...]


@dataclass(frozen=True)
class Edge:
    """An arrow from ``parent`` to ``child``, shortened to end on the nodes' rims."""

    parent: str
    child: str
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass(frozen=True)
class PlateBox:
    """A plate's box ``(x0, y0)``-``(x1, y1)`` (``y0 < y1``) and where it nests."""

    name: str
    size: int
    ragged: bool
    nested_in: str | None
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def label(self) -> str:
        """What its corner says: ``"county (85)"``, ``"house (919, ragged)"``."""
        return _label(self.name, self.size, self.ragged)


@dataclass(frozen=True)
class DiagramLayout:
    """Everything needed to draw a model; ``bounds`` is ``(x0, y0, x1, y1)``."""

    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    plates: tuple[PlateBox, ...]
    bounds: tuple[float, float, float, float]

    def node(self, name: str) -> Node:
        """The node called ``name``."""
        return next(n for n in self.nodes if n.name == name)


def _label(name: str, size: int, ragged: bool) -> str:
    return f"{name} ({size}, ragged)" if ragged else f"{name} ({size})"


def parents_of(value: object, known: set[str]) -> list[str]:
    """The names among ``known`` that a parameter value refers to, in order.

    A value that does not parse (yet) is scanned for names, so that the builder keeps
    its edges while an expression is being typed.
    """
    if not isinstance(value, str):
        return []
    try:
        names = [r.name for r in parse(value).references]
    except ExpressionError:
        names = [n for n in _NAME.findall(value) if n not in FUNCTIONS]
    return list(dict.fromkeys(n for n in names if n in known))


@dataclass
class _Block:
    """A plate (or the whole drawing, ``plate=None``) while it is being packed."""

    plate: str | None
    nodes: list[str] = field(default_factory=list)
    children: list[_Block] = field(default_factory=list)
    # Filled by _pack: width, y extent and each item's x offset in the block.
    width: float = 0.0
    y0: float = 0.0
    y1: float = 0.0
    offsets: dict[int, float] = field(default_factory=dict)


def plate_layout(model: PlateModel) -> DiagramLayout:
    """Lay out ``model``'s variables, covariates, edges and plates (never raises)."""
    plates = {}
    for p in model.plates:
        plates.setdefault(p.name, p)
    outer = _outer_plates(model)

    def chain(plate: str) -> list[str]:  # the plate and those it nests in, outer first
        out = [plate]
        while outer[out[0]] is not None:
            out.insert(0, outer[out[0]])
        return out

    # Nodes: variables, then covariates; a repeated name is drawn once (validation reports it).
    kinds: dict[str, str] = {}
    node_plates: dict[str, tuple[str, ...]] = {}
    inputs: dict[str, list[object]] = {}
    for item, kind in [*((v, OBSERVED if v.observed else LATENT) for v in model.variables),
                       *((c, COVARIATE) for c in model.covariates)]:
        if item.name in kinds:
            continue
        kinds[item.name] = kind
        chains = [chain(p) for p in item.plates if p in plates]
        node_plates[item.name] = tuple(max(chains, key=len)) if chains else ()
        inputs[item.name] = list(item.params.values()) if kind != COVARIATE else []
    known = set(kinds)
    parents = {name: [p for value in values for p in parents_of(value, known) if p != name]
               for name, values in inputs.items()}
    parents = {name: list(dict.fromkeys(ps)) for name, ps in parents.items()}
    layers = _layers(parents, kinds)

    # The block tree: a node goes to its innermost plate, a plate into its outer one.
    blocks = {name: _Block(name) for name in plates}
    root = _Block(None)
    for name in plates:
        (root if outer[name] is None else blocks[outer[name]]).children.append(blocks[name])
    for name in kinds:
        (blocks[node_plates[name][-1]] if node_plates[name] else root).nodes.append(name)
    _pack(root, layers, plates)

    # Absolute positions, walking the packed blocks.
    xs: dict[str, float] = {}
    boxes: list[PlateBox] = []

    def place(block: _Block, x: float) -> None:
        if block.plate is not None:
            p = plates[block.plate]
            boxes.append(PlateBox(p.name, p.size, p.ragged, outer[p.name], x, block.y0, x + block.width, block.y1))
            x += BOX_PAD
        for i, name in enumerate(block.nodes):
            xs[name] = x + block.offsets[i] + _slot(name) / 2
        for j, child in enumerate(block.children):
            place(child, x + block.offsets[len(block.nodes) + j])

    place(root, 0.0)
    nodes = tuple(Node(n, kinds[n], xs[n], -layers[n] * LAYER_GAP, layers[n], node_plates[n]) for n in kinds)
    where = {n.name: n for n in nodes}
    edges = tuple(_edge(where[p], where[c]) for c in kinds for p in parents[c])
    return DiagramLayout(nodes, edges, tuple(boxes), (0.0, root.y0, root.width, root.y1))


def _outer_plates(model: PlateModel) -> dict[str, str | None]:
    """Each plate's outer plate, None for an outermost one, an unknown one, or the
    plate whose ``nested_in`` closes a cycle."""
    names = {p.name for p in model.plates}
    outer: dict[str, str | None] = {}
    for p in model.plates:
        outer.setdefault(p.name, p.nested_in if p.nested_in in names and p.nested_in != p.name else None)
    for start in outer:
        path = [start]
        while (up := outer[path[-1]]) is not None:
            if up in path:
                outer[path[-1]] = None
                break
            path.append(up)
    return outer


def _layers(parents: dict[str, list[str]], kinds: dict[str, str]) -> dict[str, int]:
    """Longest path from a root to each node, ignoring the edges that close a cycle;
    then each covariate moves down to just above its first child."""
    layers: dict[str, int] = {}
    on_path: set[str] = set()

    def visit(name: str) -> int:
        if name not in layers:
            on_path.add(name)
            layers[name] = 1 + max((visit(p) for p in parents[name] if p not in on_path), default=-1)
            on_path.discard(name)
        return layers[name]

    for name in parents:
        visit(name)
    for name, kind in kinds.items():
        children = [layers[c] for c, ps in parents.items() if name in ps]
        if kind == COVARIATE and children:
            layers[name] = max(min(children) - 1, 0)
    return layers


def _pack(block: _Block, layers: dict[str, int], plates: dict) -> None:
    """Size ``block`` and place its items (nodes, then nested blocks) in it.

    Items whose y extents overlap form a row group; items of a group sit side by side
    (first fit), each group is centred in the block. Groups are apart in y, so they
    can share x.
    """
    for child in block.children:
        _pack(child, layers, plates)
    extents = [(-layers[n] * LAYER_GAP - NODE_RADIUS - NAME_HEIGHT, -layers[n] * LAYER_GAP + NODE_RADIUS, _slot(n))
               for n in block.nodes]
    extents += [(c.y0, c.y1, c.width) for c in block.children]
    if not extents:  # an empty plate: one empty slot in layer 0
        extents = [(-NODE_RADIUS, NODE_RADIUS, SLOT_WIDTH)]

    # Row groups: chains of items whose y extents (with the gap) overlap, top first.
    order = sorted(range(len(extents)), key=lambda i: -extents[i][1])
    groups: list[list[int]] = []
    low = float("inf")
    for i in order:
        if extents[i][1] + MIN_GAP > low:
            groups[-1].append(i)
        else:
            groups.append([i])
            low = float("inf")
        low = min(low, extents[i][0])

    # First fit within each group, in the block's own order (nodes, then plates).
    offsets: dict[int, float] = {}
    widths = []
    for group in groups:
        placed: list[tuple[float, float, int]] = []  # (x0, x1, item)
        for i in sorted(group):
            y0, y1, w = extents[i]
            clashing = [(a, b) for a, b, j in placed if y0 < extents[j][1] + MIN_GAP and extents[j][0] < y1 + MIN_GAP]
            x = min(c for c in [0.0, *(b for _, b in clashing)] if all(c + w <= a or b <= c for a, b in clashing))
            placed.append((x, x + w, i))
        widths.append(max(b for _, b, _ in placed))
        for x0, _, i in placed:
            offsets[i] = x0
    inner = max(widths)
    if block.plate is not None:
        p = plates[block.plate]
        inner = max(inner, len(_label(p.name, p.size, p.ragged)) * CHAR_WIDTH)
    for group, width in zip(groups, widths):
        for i in group:
            offsets[i] += (inner - width) / 2
    block.offsets = offsets
    block.y0 = min(e[0] for e in extents)
    block.y1 = max(e[1] for e in extents)
    block.width = inner
    if block.plate is not None:
        block.y0 -= LABEL_PAD
        block.y1 += BOX_PAD
        block.width += 2 * BOX_PAD


def _slot(name: str) -> float:
    """The width a node takes: room for its name."""
    return max(SLOT_WIDTH, (len(name) + 2) * CHAR_WIDTH)


def _edge(parent: Node, child: Node) -> Edge:
    dx, dy = child.x - parent.x, child.y - parent.y
    length = max((dx * dx + dy * dy) ** 0.5, 1e-9)
    ux, uy = dx / length * NODE_RADIUS, dy / length * NODE_RADIUS
    return Edge(parent.name, child.name, parent.x + ux, parent.y + uy, child.x - ux, child.y - uy)
