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
- **Nodes and their text.** A node's name is written right of its symbol, and under
  the name, on request, its distribution (``~ Normal(0, 5)``, as PyMC's graphviz
  drawing says it): beside the node rather than under it, so that the edges coming
  in from above and leaving below do not cross it. Text sizes are estimated from
  the fonts the diagram uses (:data:`NAME_FONT_PT`, :data:`LABEL_FONT_PT` at
  :data:`PIXELS_PER_UNIT`); a node's slot is as wide as its symbol and text.
- **Plates as nested blocks.** A node belongs to the deepest of its known plates and,
  through ``nested_in``, to all the plates that one nests in. Each plate is a block
  holding its own nodes and the blocks of the plates nested in it; blocks are packed
  left to right, and an item shares x with another only when their y extents are
  apart. So every node lies inside the boxes of all its plates and outside the
  others, nested boxes lie inside their outer box, and siblings never overlap.
- **Edges.** An edge is the shortest polyline from its parent to its child that keeps
  :data:`EDGE_CLEARANCE` away from every other node's symbol, from every name and
  distribution and from the plates' labels (a shortest path in the visibility graph
  of those obstacles, inflated into convex polygons). Most edges are straight; one
  that would cross a node (a parent two layers up, right above the node between)
  bends around it, as graphviz's polyline edges do. The polyline is then cut where it
  leaves the parent's symbol and where it enters the child's: its last segment
  heads for the child's centre, so the arrowhead drawn on it points at the child.
- **Limits.** Crossed plates (a variable in two plates neither of which nests in the
  other) cannot all be drawn as boxes around it: it is drawn in its deepest plate.
  A plate holding no node yet is drawn as an empty box in layer 0. An edge with no
  way around its obstacles (only in a layout broken beyond this module's promises)
  is drawn straight, and so are all the edges of a model of more than
  :data:`MAX_ROUTED_NODES` nodes.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pavi_viz.model.expressions import FUNCTIONS, ExpressionError, parse
from pavi_viz.model.spec import PlateModel

#: Vertical distance between layers and least horizontal width of a node's slot (data units).
LAYER_GAP = 1.2
SLOT_WIDTH = 1.0
#: A node's radius; half the side of a covariate's square (inside that circle).
NODE_RADIUS = 0.24
COVARIATE_HALF_SIDE = 0.19
#: Room in a node's slot left of its symbol and right of its text; between symbol and text.
SLOT_PAD = 0.12
TEXT_GAP = 0.1
#: Margin of a plate box around its content: left, right and top; bottom (holds the label).
BOX_PAD = 0.12
LABEL_PAD = 0.22
#: Where a plate's label sits: this far in from its box's lower right corner.
PLATE_LABEL_INSET = 0.05
#: Smallest vertical gap between items packed in the same column.
MIN_GAP = 0.1
#: Least distance between an edge and a symbol or text it goes around (more than the
#: selection's ring takes around a disc).
EDGE_CLEARANCE = 0.1
#: A model of more nodes has its edges drawn straight: routing takes time that grows as
#: edges x corners x obstacles (0.35 s for 30 variables with 84 edges, 0.8 s for 40 with
#: 114, 2.4 s for 60), and the layout runs on the server's event loop at each edit.
MAX_ROUTED_NODES = 40

#: The drawing's scale and fonts that the text sizes are estimated for: the diagram
#: draws at most this many pixels per unit, and scales its fonts with the drawing.
PIXELS_PER_UNIT = 80
NAME_FONT_PT = 9
LABEL_FONT_PT = 8
#: A character's mean width and a line's height, in ems of its font (a sans-serif
#: font's lower-case names and expressions; generous, so that texts do not collide).
CHAR_EMS = 0.6
LINE_EMS = 1.25
#: An argument of a distribution longer than this is cut short (``"alpha[county] + b…"``):
#: the hover text says it whole.
MAX_ARGUMENT_CHARS = 20

LATENT, OBSERVED, COVARIATE = "latent", "observed", "covariate"

_NAME = re.compile(r"[A-Za-z_]\w*")
_PIXELS_PER_POINT = 4 / 3

Point = tuple[float, float]
#: A convex polygon: its corners, counter-clockwise.
Polygon = tuple[Point, ...]


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle ``(x0, y0)``-``(x1, y1)``, ``x0 <= x1`` and ``y0 <= y1``."""

    x0: float
    y0: float
    x1: float
    y1: float

    def contains(self, x: float, y: float) -> bool:
        """Whether ``(x, y)`` lies in the rectangle (its sides included)."""
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1


@dataclass(frozen=True)
class Node:
    """A variable or covariate: its centre, kind, the plates it is drawn in (outer
    first), its distribution's label (``"~ Normal(0, 5)"``; empty when not shown, and
    for a covariate) and ``text``, where its name and label are written."""

    name: str
    kind: str  # LATENT, OBSERVED or COVARIATE
    x: float
    y: float
    layer: int
    plates: tuple[str, ...]
    label: str
    text: Box

    def on_symbol(self, x: float, y: float) -> bool:
        """Whether ``(x, y)`` lies on the node's symbol: its disc, or a covariate's square."""
        dx, dy = x - self.x, y - self.y
        if self.kind == COVARIATE:
            return max(abs(dx), abs(dy)) <= COVARIATE_HALF_SIDE
        return dx * dx + dy * dy <= NODE_RADIUS**2


@dataclass(frozen=True)
class Edge:
    """An arrow from ``parent`` to ``child``: a polyline from the rim of the parent's
    symbol to the rim of the child's, bending around the nodes in between."""

    parent: str
    child: str
    points: tuple[Point, ...]


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

    @property
    def label_box(self) -> Box:
        """Where its label is written: in its lower right corner."""
        x1, y0 = self.x1 - PLATE_LABEL_INSET, self.y0 + PLATE_LABEL_INSET
        return Box(x1 - text_width(self.label, LABEL_FONT_PT), y0, x1, y0 + line_height(LABEL_FONT_PT))


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

    def node_at(self, x: float, y: float) -> Node | None:
        """The node whose disc or text holds ``(x, y)`` (what a click there points at), if any."""
        return next((n for n in self.nodes
                     if (n.x - x) ** 2 + (n.y - y) ** 2 <= NODE_RADIUS**2 or n.text.contains(x, y)), None)


def text_width(text: str, font_pt: float) -> float:
    """The estimated width of ``text`` written at ``font_pt`` points (data units)."""
    return len(text) * CHAR_EMS * font_pt * _PIXELS_PER_POINT / PIXELS_PER_UNIT


def line_height(font_pt: float) -> float:
    """The height of a line of text at ``font_pt`` points (data units)."""
    return LINE_EMS * font_pt * _PIXELS_PER_POINT / PIXELS_PER_UNIT


def _label(name: str, size: int, ragged: bool) -> str:
    return f"{name} ({size}, ragged)" if ragged else f"{name} ({size})"


def distribution_label(distribution: str, params: Mapping[str, object]) -> str:
    """``"~ Normal(mu, 5)"``: a variable's distribution and its parameters' values, in
    order, as a textbook (or PyMC's graphviz drawing) writes it; a long argument is cut
    short (:data:`MAX_ARGUMENT_CHARS`). Plain text, to be drawn as such (never markup:
    it comes from the user's model)."""
    return f"~ {distribution}({', '.join(_shorten(_argument(v)) for v in params.values())})"


def _argument(value: object) -> str:
    """A parameter's value as written in a label: ``5.0`` as ``5``, a list as ``[1, 1, 1]``,
    an expression as it is."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return f"[{', '.join(_argument(v) for v in value)}]"
    return str(value)


def _shorten(text: str) -> str:
    """``text``, cut short to :data:`MAX_ARGUMENT_CHARS` with an ellipsis."""
    return text if len(text) <= MAX_ARGUMENT_CHARS else text[: MAX_ARGUMENT_CHARS - 1] + "…"


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


def plate_layout(model: PlateModel, distributions: bool = False) -> DiagramLayout:
    """Lay out ``model``'s variables, covariates, edges and plates (never raises);
    with ``distributions``, each variable's distribution is written under its name."""
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
    labels: dict[str, str] = {}
    for item, kind in [*((v, OBSERVED if v.observed else LATENT) for v in model.variables),
                       *((c, COVARIATE) for c in model.covariates)]:
        if item.name in kinds:
            continue
        kinds[item.name] = kind
        chains = [chain(p) for p in item.plates if p in plates]
        node_plates[item.name] = tuple(max(chains, key=len)) if chains else ()
        inputs[item.name] = list(item.params.values()) if kind != COVARIATE else []
        shown = distributions and kind != COVARIATE
        labels[item.name] = distribution_label(item.distribution, item.params) if shown else ""
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
    for name in _parents_by_child(parents):
        (blocks[node_plates[name][-1]] if node_plates[name] else root).nodes.append(name)
    _pack(root, layers, labels, plates)

    # Absolute positions, walking the packed blocks.
    xs: dict[str, float] = {}
    boxes: list[PlateBox] = []

    def place(block: _Block, x: float) -> None:
        if block.plate is not None:
            p = plates[block.plate]
            boxes.append(PlateBox(p.name, p.size, p.ragged, outer[p.name], x, block.y0, x + block.width, block.y1))
            x += BOX_PAD
        for i, name in enumerate(block.nodes):
            xs[name] = x + block.offsets[i] + SLOT_PAD + NODE_RADIUS
        for j, child in enumerate(block.children):
            place(child, x + block.offsets[len(block.nodes) + j])

    place(root, 0.0)
    nodes = tuple(_node(n, kinds[n], xs[n], layers[n], node_plates[n], labels[n]) for n in kinds)
    edges = _edges(nodes, parents, boxes)
    return DiagramLayout(nodes, edges, tuple(boxes), (0.0, root.y0, root.width, root.y1))


def _parents_by_child(parents: dict[str, list[str]]) -> list[str]:
    """The nodes, in the order of their first child (those with none last), else as
    given: a block packs its nodes in this order, so that parents sit together above
    their child rather than as the model lists them (radon's ``mu_alpha, mu_beta,
    sigma_alpha``), and their edges do not cross."""
    order = list(parents)
    first_child = {name: min((i for i, child in enumerate(order) if name in parents[child]), default=len(order))
                   for name in order}
    return sorted(order, key=first_child.__getitem__)


def _node(name: str, kind: str, x: float, layer: int, plates: tuple[str, ...], label: str) -> Node:
    """A node at ``x`` in ``layer``, its name (and label) written right of its symbol,
    the text's lines centred on the node's height."""
    y = -layer * LAYER_GAP
    half = _text_height(label) / 2
    x0 = x + NODE_RADIUS + TEXT_GAP
    return Node(name, kind, x, y, layer, plates, label, Box(x0, y - half, x0 + _text_width(name, label), y + half))


def _text_width(name: str, label: str) -> float:
    """The width of a node's text: its name, and its label under it."""
    return max(text_width(name, NAME_FONT_PT), text_width(label, LABEL_FONT_PT))


def _text_height(label: str) -> float:
    """The height of a node's text: a line for its name, one more for a label."""
    return line_height(NAME_FONT_PT) + (line_height(LABEL_FONT_PT) if label else 0.0)


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


def _pack(block: _Block, layers: dict[str, int], labels: dict[str, str], plates: dict) -> None:
    """Size ``block`` and place its items (nodes, then nested blocks) in it.

    Items whose y extents overlap form a row group; items of a group sit side by side
    (first fit), each group is centred in the block. Groups are apart in y, so they
    can share x.
    """
    for child in block.children:
        _pack(child, layers, labels, plates)
    # A node's text is no taller than its symbol: its extent is the symbol's.
    extents = [(-layers[n] * LAYER_GAP - NODE_RADIUS, -layers[n] * LAYER_GAP + NODE_RADIUS, _slot(n, labels[n]))
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
        inner = max(inner, text_width(_label(p.name, p.size, p.ragged), LABEL_FONT_PT))
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


def _slot(name: str, label: str) -> float:
    """The width a node takes: its symbol and its text, with room on either side."""
    return max(SLOT_WIDTH, 2 * SLOT_PAD + 2 * NODE_RADIUS + TEXT_GAP + _text_width(name, label))


# -- edges ---------------------------------------------------------------------------------
#: How far inside an obstacle a point must be to count as inside: a path along a side or
#: through a corner of an obstacle (its waypoints are those corners) touches, not crosses.
_TOUCH = 1e-9
#: Halvings of a segment that find where it crosses a symbol's rim (to 1e-12 of its length).
_BISECTIONS = 40


@dataclass(frozen=True)
class _Obstacle:
    """A convex polygon that edges go around: its corners (counter-clockwise), each
    side as a corner on it and its outward unit normal ``(x, y, nx, ny)``, and its
    bounding box (most points and segments are told apart from it by that alone)."""

    corners: Polygon
    sides: tuple[tuple[float, float, float, float], ...]
    bounds: Box


def _obstacle(corners: Polygon) -> _Obstacle:
    """The obstacle of the convex polygon ``corners`` (counter-clockwise)."""
    sides = []
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
        length = math.hypot(x1 - x0, y1 - y0)
        sides.append((x0, y0, (y1 - y0) / length, (x0 - x1) / length))
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    return _Obstacle(corners, tuple(sides), Box(min(xs), min(ys), max(xs), max(ys)))


def _edges(nodes: Sequence[Node], parents: Mapping[str, list[str]], boxes: Sequence[PlateBox]) -> tuple[Edge, ...]:
    """Each parent's edge to each child, routed around the other nodes' symbols, every
    node's text and the plates' labels."""
    where = {n.name: n for n in nodes}
    texts = [_obstacle(_rectangle(n.text, EDGE_CLEARANCE)) for n in nodes]
    texts += [_obstacle(_rectangle(b.label_box, EDGE_CLEARANCE)) for b in boxes]
    discs = [_obstacle(_octagon(n.x, n.y, NODE_RADIUS + EDGE_CLEARANCE)) for n in nodes]
    router = _Router([*texts, *discs] if len(nodes) <= MAX_ROUTED_NODES else [])  # none: straight edges
    disc = {n.name: len(texts) + i for i, n in enumerate(nodes)}  # each node's disc among the obstacles
    return tuple(_edge(where[p], where[c], router, frozenset({disc[p], disc[c]})) for c in where for p in parents[c])


def _edge(parent: Node, child: Node, router: _Router, own: frozenset[int]) -> Edge:
    """The edge from ``parent`` to ``child`` around every obstacle but their discs
    (``own``), from rim to rim."""
    path = router.route((parent.x, parent.y), (child.x, child.y), own)
    path = _leave(path, parent.on_symbol)
    path = _leave(path[::-1], child.on_symbol)[::-1]
    return Edge(parent.name, child.name, tuple(path))


def _octagon(x: float, y: float, radius: float) -> Polygon:
    """The regular octagon around the circle of ``radius`` at ``(x, y)`` (its sides touch it)."""
    corner = radius / math.cos(math.pi / 8)
    angles = [math.pi / 8 + k * math.pi / 4 for k in range(8)]
    return tuple((x + corner * math.cos(a), y + corner * math.sin(a)) for a in angles)


def _rectangle(box: Box, margin: float) -> Polygon:
    """``box`` grown by ``margin`` on every side, as a polygon."""
    x0, y0, x1, y1 = box.x0 - margin, box.y0 - margin, box.x1 + margin, box.y1 + margin
    return (x0, y0), (x1, y0), (x1, y1), (x0, y1)


def _inside(point: Point, obstacle: _Obstacle) -> bool:
    """Whether ``point`` lies inside ``obstacle`` (not on its boundary)."""
    if not obstacle.bounds.contains(*point):
        return False
    return all(nx * (point[0] - x) + ny * (point[1] - y) < -_TOUCH for x, y, nx, ny in obstacle.sides)


def _crosses(a: Point, b: Point, obstacle: _Obstacle) -> bool:
    """Whether the segment ``a``-``b`` passes through the inside of ``obstacle``
    (Cyrus-Beck clipping; running along a side or through a corner does not count)."""
    enter, leave = 0.0, 1.0
    for x, y, nx, ny in obstacle.sides:
        # The segment is on the inner side of this side's line where start + t * change < 0.
        start = nx * (a[0] - x) + ny * (a[1] - y) + _TOUCH
        change = nx * (b[0] - a[0]) + ny * (b[1] - a[1])
        if change < 0:
            enter = max(enter, -start / change)
        elif change > 0:
            leave = min(leave, -start / change)
        elif start >= 0:  # parallel to the side, outside it
            return False
        if enter >= leave:
            return False
    return True


class _Router:
    """Routes the edges of one drawing around its obstacles: A* in the visibility graph
    of the obstacles' corners. What does not depend on the edge is shared by all: the
    corners, the obstacles each lies inside, and which corners see each other."""

    #: The keys of an edge's own ends among the points of its search (corners are 0, 1, ...).
    START, END = -1, -2

    def __init__(self, obstacles: Sequence[_Obstacle]) -> None:
        self.obstacles = list(obstacles)
        self.corners = [c for obstacle in self.obstacles for c in obstacle.corners]
        # A corner inside an obstacle is a waypoint only for an edge that may pass that obstacle.
        self.holders = [frozenset(k for k, o in enumerate(self.obstacles) if _inside(c, o)) for c in self.corners]
        self._blocking: dict[tuple[int, int], int | None] = {}  # see _sees

    def route(self, start: Point, end: Point, passable: frozenset[int]) -> list[Point]:
        """The shortest polyline from ``start`` to ``end`` that crosses no obstacle but
        the ``passable`` ones (their indices). Straight when nothing is in the way, or
        when there is no way around."""
        if self._blocker(start, end, passable) is None:
            return [start, end]
        points = {self.START: start, self.END: end}
        points |= {i: c for i, c in enumerate(self.corners) if self.holders[i] <= passable}
        cost = {self.START: 0.0}
        previous: dict[int, int] = {}
        done: set[int] = set()
        queue = [(math.dist(start, end), self.START)]
        while queue and self.END not in done:
            _, i = heapq.heappop(queue)
            if i in done:
                continue
            done.add(i)
            for j, point in points.items():
                through = cost[i] + math.dist(points[i], point)
                if j not in done and through < cost.get(j, math.inf) and self._sees(i, j, points, passable):
                    cost[j], previous[j] = through, i
                    heapq.heappush(queue, (through + math.dist(point, end), j))
        if self.END not in done:
            return [start, end]
        path = [self.END]
        while path[-1] != self.START:
            path.append(previous[path[-1]])
        return [points[i] for i in reversed(path)]

    def _sees(self, i: int, j: int, points: Mapping[int, Point], passable: frozenset[int]) -> bool:
        """Whether ``points[i]`` and ``points[j]`` see each other past every obstacle but
        the passable ones. Between two corners, the first obstacle in the way of all is
        found once for every edge; only when it is passable is the segment looked at again."""
        if i < 0 or j < 0:
            return self._blocker(points[i], points[j], passable) is None
        key = (min(i, j), max(i, j))
        if key not in self._blocking:
            self._blocking[key] = self._blocker(points[i], points[j], frozenset())
        blocker = self._blocking[key]
        return blocker is None or (blocker in passable and self._blocker(points[i], points[j], passable) is None)

    def _blocker(self, a: Point, b: Point, passable: frozenset[int]) -> int | None:
        """The first obstacle but the passable ones that the segment ``a``-``b`` crosses
        (None: none). Most obstacles are told apart by their bounding box alone: that test
        is written out here, in the loop run millions of times for a large model."""
        x0, x1, y0, y1 = min(a[0], b[0]), max(a[0], b[0]), min(a[1], b[1]), max(a[1], b[1])
        for k, obstacle in enumerate(self.obstacles):
            box = obstacle.bounds
            if x1 > box.x0 and x0 < box.x1 and y1 > box.y0 and y0 < box.y1 and k not in passable \
                    and _crosses(a, b, obstacle):
                return k
        return None


def _leave(path: list[Point], inside: Callable[[float, float], bool]) -> list[Point]:
    """``path``, which starts inside a shape (``inside`` says which points are in it),
    from where it leaves that shape on."""
    for i in range(1, len(path)):
        if not inside(*path[i]):
            return [_boundary(path[i - 1], path[i], inside), *path[i:]]
    return path


def _boundary(a: Point, b: Point, inside: Callable[[float, float], bool]) -> Point:
    """Where the segment from ``a`` (inside the shape) to ``b`` (outside) crosses its boundary."""
    low, high = 0.0, 1.0
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        if inside(a[0] + middle * (b[0] - a[0]), a[1] + middle * (b[1] - a[1])):
            low = middle
        else:
            high = middle
    return a[0] + high * (b[0] - a[0]), a[1] + high * (b[1] - a[1])
