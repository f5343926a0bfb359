"""Pictures of Graphics3D: a static SVG of the default view, and a view that turns with the mouse.

Why here: Mathics3 has no SVG export for Graphics3D (its front ends draw it with three.js from
a server, or Asymptote), so a notebook showed ``-Graphics3D-``.  This module reads the
primitives (Polygon, Line, Point, Sphere, Cuboid, GraphicsComplex; colours and Opacity as
directives) into a scene of flat faces, lines and points, and draws it twice from the same data:
as SVG (painter's algorithm, flat shading, Mathematica's default view point {1.3, -2.4, 2} and
its bounding box), and as a small HTML canvas whose script (written here, shipped in the
package, nothing fetched) draws the scene again as the mouse turns it.  The HTML holds the SVG
too, so a front end that runs no script (an untrusted notebook) still shows the picture.

Runs in the Mathics3 worker; reads Mathics3 expressions by attribute only.
"""

from __future__ import annotations

import json
import math
from typing import Any

VIEW_POINT = (1.3, -2.4, 2.0)
SIZE = 360  # pixels of the picture's side
MAX_FACES = 20_000  # beyond this the scene is not drawn (the text form stays)
_NAMED = {"Red": (1, 0, 0), "Green": (0, 1, 0), "Blue": (0, 0, 1), "Black": (0, 0, 0),
          "White": (1, 1, 1), "Gray": (0.5, 0.5, 0.5), "Yellow": (1, 1, 0),
          "Orange": (1, 0.5, 0), "Purple": (0.5, 0, 0.5), "Cyan": (0, 1, 1),
          "Magenta": (1, 0, 1), "Brown": (0.6, 0.4, 0.2), "Pink": (1, 0.5, 0.5)}
_SURFACE = (1.0, 0.8, 0.45)  # Plot3D's default surface colour, roughly


class Unsupported(Exception):
    """The scene has something this module cannot draw; the text form is shown alone."""


def _name(expr: Any) -> str:
    return str(expr.get_head_name() if getattr(expr, "elements", None) is not None
               else getattr(expr, "get_name", lambda: "")()).rpartition("`")[2]


def _number(expr: Any) -> float:
    value = getattr(expr, "value", None)
    if isinstance(value, (int, float)):
        return float(value)
    to_float = getattr(expr, "round_to_float", None)
    result = to_float() if callable(to_float) else None
    if result is None:
        raise Unsupported(f"not a number: {expr}")
    return float(result)


def _point(expr: Any) -> tuple[float, float, float]:
    elements = getattr(expr, "elements", None)
    if elements is None or len(elements) != 3:
        raise Unsupported(f"not a 3D point: {expr}")
    x, y, z = (_number(e) for e in elements)
    return (x, y, z)


def _points(expr: Any, table: list | None) -> list[tuple[float, float, float]]:
    elements = getattr(expr, "elements", ())
    if table is not None and elements and getattr(elements[0], "elements", None) is None:
        return [table[int(_number(e)) - 1] for e in elements]  # GraphicsComplex indices
    return [_point(e) for e in elements]


def _nested(expr: Any) -> bool:
    """A list of lists of points ({{p, p, p}, {p, p, p}}), not a list of points."""
    first = (getattr(expr, "elements", None) or [None])[0]
    inner = getattr(first, "elements", None)
    return bool(inner) and getattr(inner[0], "elements", None) is not None


class Scene:
    """Faces (point lists), lines and points, each with its RGBA colour."""

    def __init__(self) -> None:
        self.faces: list[tuple[list, tuple]] = []
        self.lines: list[tuple[list, tuple]] = []
        self.points: list[tuple[list, tuple]] = []
        self.box_ratios: tuple[float, float, float] | None = None

    def read(self, graphics: Any) -> Scene:
        elements = graphics.elements
        self._walk(elements[0], [_SURFACE, 1.0], None)
        for option in elements[1:]:
            if _name(option) == "Rule" and _name(option.elements[0]) == "BoxRatios":
                try:
                    self.box_ratios = _point(option.elements[1])
                except Unsupported:
                    pass
        if len(self.faces) > MAX_FACES:
            raise Unsupported(f"{len(self.faces)} faces")
        return self

    def _walk(self, expr: Any, style: list, table: list | None) -> None:
        name = _name(expr)
        args = getattr(expr, "elements", None) or ()
        colour = (*style[0], style[1])
        if name == "List":
            inner = list(style)  # directives hold to the end of their list
            for item in args:
                self._walk(item, inner, table)
        elif name == "RGBColor" and len(args) >= 3:
            style[0] = tuple(_number(a) for a in args[:3])
            if len(args) > 3:
                style[1] = _number(args[3])
        elif name == "GrayLevel" and args:
            style[0] = (_number(args[0]),) * 3
        elif name == "Hue" and args:
            style[0] = _hue(_number(args[0]))
        elif name in _NAMED and not args:
            style[0] = _NAMED[name]
        elif name == "Opacity" and args:
            style[1] = _number(args[0])
        elif name == "Directive":
            for item in args:
                self._walk(item, style, table)
        elif name == "Style" and args:
            inner = list(style)
            for item in args[1:]:
                self._walk(item, inner, table)
            self._walk(args[0], inner, table)
        elif name == "GraphicsComplex" and len(args) >= 2:
            self._walk(args[1], list(style), [_point(p) for p in args[0].elements])
        elif name == "Polygon" and args:
            groups = args[0].elements if _nested(args[0]) else [args[0]]
            for group in groups:
                self.faces.append((_points(group, table), colour))
        elif name == "Line" and args:
            groups = args[0].elements if _nested(args[0]) else [args[0]]
            for group in groups:
                self.lines.append((_points(group, table), colour))
        elif name == "Point" and args:
            target = args[0]
            pts = _points(target, table) if getattr(target.elements[0], "elements", None) \
                is not None or table is not None else [_point(target)]
            self.points.append((pts, colour))
        elif name == "Sphere":
            centre = _point(args[0]) if args else (0.0, 0.0, 0.0)
            radius = _number(args[1]) if len(args) > 1 else 1.0
            self.faces += [(face, colour) for face in _sphere(centre, radius)]
        elif name == "Cuboid" and args:
            corners = list(args[0].elements) if _nested(args[0]) is False and len(args) == 1 \
                and getattr(args[0].elements[0], "elements", None) is not None else list(args)
            low = _point(corners[0])
            high = _point(corners[1]) if len(corners) > 1 else tuple(c + 1 for c in low)
            self.faces += [(face, colour) for face in _cuboid(low, high)]
        elif name in ("Rule", "EdgeForm", "FaceForm", "Specularity", "Thickness",
                      "PointSize", "AbsoluteThickness", "AbsolutePointSize", "Lighting"):
            pass  # directives that change nothing this picture draws
        else:
            raise Unsupported(f"cannot draw {name}")

    def box(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        every = [p for group in (self.faces, self.lines, self.points) for pts, _ in group
                 for p in pts]
        if not every:
            raise Unsupported("nothing to draw")
        low = tuple(min(p[i] for p in every) for i in range(3))
        high = tuple(max(p[i] for p in every) for i in range(3))
        return low, high

    def normalised(self) -> dict[str, Any]:
        """The scene in a box centred on 0 whose sides have the box ratios (longest 1):
        what both drawings take."""
        low, high = self.box()
        span = [max(h - lo, 1e-12) for lo, h in zip(low, high, strict=True)]
        ratios = self.box_ratios or tuple(span)
        longest = max(ratios)
        scale = [r / longest / s for r, s in zip(ratios, span, strict=True)]

        def norm(p: tuple[float, ...]) -> list[float]:
            return [round((p[i] - (low[i] + high[i]) / 2) * scale[i], 5) for i in range(3)]

        half = [r / longest / 2 for r in ratios]
        return {
            "faces": [[[norm(p) for p in pts], list(c)] for pts, c in self.faces],
            "lines": [[[norm(p) for p in pts], list(c)] for pts, c in self.lines],
            "points": [[[norm(p) for p in pts], list(c)] for pts, c in self.points],
            "half": half,
        }


def _hue(h: float) -> tuple[float, float, float]:
    h = (h % 1.0) * 6
    i, f = int(h), h - int(h)
    return [(1, f, 0), (1 - f, 1, 0), (0, 1, f), (0, 1 - f, 1), (f, 0, 1), (1, 0, 1 - f)][i % 6]


def _sphere(c: tuple[float, ...], r: float, rings: int = 10, segments: int = 16) -> list:
    def at(i: int, j: int) -> tuple[float, float, float]:
        theta, phi = math.pi * i / rings, 2 * math.pi * j / segments
        return (c[0] + r * math.sin(theta) * math.cos(phi),
                c[1] + r * math.sin(theta) * math.sin(phi), c[2] + r * math.cos(theta))
    return [[at(i, j), at(i + 1, j), at(i + 1, j + 1), at(i, j + 1)]
            for i in range(rings) for j in range(segments)]


def _cuboid(a: tuple[float, ...], b: tuple[float, ...]) -> list:
    v = [(x, y, z) for x in (a[0], b[0]) for y in (a[1], b[1]) for z in (a[2], b[2])]
    return [[v[i] for i in face] for face in
            ((0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3))]


def _camera(view: tuple[float, float, float]) -> tuple[list[float], list[float], list[float]]:
    """Unit vectors right, up and towards the viewer for a view point (z is up)."""
    n = math.sqrt(sum(c * c for c in view))
    back = [c / n for c in view]
    right = [-back[1], back[0], 0.0]
    rn = math.hypot(*right) or 1.0
    right = [c / rn for c in right]
    up = [back[1] * right[2] - back[2] * right[1], back[2] * right[0] - back[0] * right[2],
          back[0] * right[1] - back[1] * right[0]]
    return right, up, back


def svg(scene: dict[str, Any], view: tuple[float, float, float] = VIEW_POINT) -> str:
    """The scene as an SVG picture, seen from ``view`` (in box-ratio coordinates)."""
    right, up, back = _camera(view)
    scale = SIZE * 0.55

    def project(p: list[float]) -> tuple[float, float, float]:
        return (SIZE / 2 + scale * _dot(p, right), SIZE / 2 - scale * _dot(p, up),
                _dot(p, back))

    items: list[tuple[float, str]] = []
    light = _unit([back[0] + 0.3, back[1] + 0.2, back[2] + 0.6])
    for pts, colour in scene["faces"]:
        if len(pts) < 3:
            continue
        proj = [project(p) for p in pts]
        normal = _unit(_cross(_sub(pts[1], pts[0]), _sub(pts[2], pts[0])))
        shade = 0.35 + 0.65 * abs(_dot(normal, light))
        fill = _rgb([c * shade for c in colour[:3]])
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in proj)
        items.append((sum(z for *_, z in proj) / len(proj),
                      f'<polygon points="{path}" fill="{fill}" fill-opacity="{colour[3]:g}" '
                      f'stroke="{fill}" stroke-width="0.3"/>'))
    for pts, colour in scene["lines"]:
        proj = [project(p) for p in pts]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in proj)
        items.append((max(z for *_, z in proj) + 1e-3,
                      f'<polyline points="{path}" fill="none" stroke="{_rgb(colour[:3])}"/>'))
    for pts, colour in scene["points"]:
        for p in pts:
            x, y, z = project(p)
            items.append((z + 1e-3, f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" '
                                    f'fill="{_rgb(colour[:3])}"/>'))
    items.sort(key=lambda item: item[0])
    box = "".join(f'<line x1="{a[0]:.1f}" y1="{a[1]:.1f}" x2="{b[0]:.1f}" y2="{b[1]:.1f}"/>'
                  for a, b in ((project(p), project(q)) for p, q in _box_edges(scene["half"])))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{SIZE}" height="{SIZE}" '
            f'viewBox="0 0 {SIZE} {SIZE}"><g stroke="#999" stroke-width="0.6">{box}</g>'
            + "".join(text for _, text in items) + "</svg>")


def _box_edges(half: list[float]) -> list[tuple[list[float], list[float]]]:
    corners = [[sx * half[0], sy * half[1], sz * half[2]]
               for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
    return [(corners[i], corners[j]) for i in range(8) for j in range(i + 1, 8)
            if bin(i ^ j).count("1") == 1]


def _dot(a: Any, b: Any) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _sub(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


def _cross(a: list[float], b: list[float]) -> list[float]:
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(c * c for c in v)) or 1.0
    return [c / n for c in v]


def _rgb(colour: Any) -> str:
    return "#" + "".join(f"{max(0, min(255, round(c * 255))):02x}" for c in colour)


# The interactive view: the same drawing as ``svg`` (the box behind the scene), in a
# canvas, turned by dragging.
_SCRIPT = """(function(){var S=%(scene)s,c=document.getElementById('%(id)s');if(!c)return;
var st=c.previousElementSibling;st.style.display='none';c.style.display='block';
var g=c.getContext('2d'),W=c.width,az=Math.atan2(%(vy)s,%(vx)s),el=Math.atan2(%(vz)s,
Math.hypot(%(vx)s,%(vy)s));function cam(){var b=[Math.cos(el)*Math.cos(az),Math.cos(el)*
Math.sin(az),Math.sin(el)],r=[-b[1],b[0],0],n=Math.hypot(r[0],r[1])||1;r=[r[0]/n,r[1]/n,0];
var u=[b[1]*r[2]-b[2]*r[1],b[2]*r[0]-b[0]*r[2],b[0]*r[1]-b[1]*r[0]];return[r,u,b]}
function dot(a,b){return a[0]*b[0]+a[1]*b[1]+a[2]*b[2]}function col(c,s){return'rgba('+
Math.round(255*c[0]*s)+','+Math.round(255*c[1]*s)+','+Math.round(255*c[2]*s)+','+c[3]+')'}
function draw(){var C=cam(),k=W*0.55,P=function(p){return[W/2+k*dot(p,C[0]),W/2-k*dot(p,C[1]),
dot(p,C[2])]},L=[C[2][0]+0.3,C[2][1]+0.2,C[2][2]+0.6],ln=Math.hypot(L[0],L[1],L[2]),it=[];
S.faces.forEach(function(f){var p=f[0];if(p.length<3)return;var q=p.map(P),a=[p[1][0]-p[0][0],
p[1][1]-p[0][1],p[1][2]-p[0][2]],b=[p[2][0]-p[0][0],p[2][1]-p[0][1],p[2][2]-p[0][2]],
n=[a[1]*b[2]-a[2]*b[1],a[2]*b[0]-a[0]*b[2],a[0]*b[1]-a[1]*b[0]],nn=Math.hypot(n[0],n[1],n[2])
||1,s=0.35+0.65*Math.abs(dot(n,L)/nn/ln);it.push([q.reduce(function(t,v){return t+v[2]},0)/
q.length,q,col(f[1],s),1])});S.lines.forEach(function(l){var q=l[0].map(P);it.push([Math.max.
apply(null,q.map(function(v){return v[2]}))+1e-3,q,col(l[1],1),2])});S.points.forEach(
function(l){l[0].forEach(function(p){var q=[P(p)];it.push([q[0][2]+1e-3,q,col(l[1],1),3])})});
it.sort(function(a,b){return a[0]-b[0]});g.clearRect(0,0,W,W);
var h=S.half,E=function(i){return P([(i&4?1:-1)*h[0],(i&2?1:-1)*h[1],(i&1?1:-1)*h[2]])};
g.strokeStyle='#999';g.lineWidth=0.6;for(var i=0;i<8;i++)for(var j=i+1;j<8;j++){
var x=i^j;if(x&(x-1))continue;
var a=E(i),b=E(j);g.beginPath();g.moveTo(a[0],a[1]);g.lineTo(b[0],b[1]);g.stroke()}
g.lineWidth=1;it.forEach(function(i){var q=
i[1];g.beginPath();if(i[3]==3){g.arc(q[0][0],q[0][1],2.5,0,7);g.fillStyle=i[2];g.fill();
return}g.moveTo(q[0][0],q[0][1]);for(var j=1;j<q.length;j++)g.lineTo(q[j][0],q[j][1]);if(
i[3]==2){g.strokeStyle=i[2];g.stroke();return}g.closePath();g.fillStyle=i[2];g.fill();
g.strokeStyle=i[2];g.lineWidth=0.3;g.stroke()})}var d=null;c.onmousedown=function(e){d=[e.
clientX,e.clientY]};window.addEventListener('mouseup',function(){d=null});c.onmousemove=
function(e){if(!d)return;az-=(e.clientX-d[0])*0.01;el=Math.max(-1.5,Math.min(1.5,el+(e.
clientY-d[1])*0.01));d=[e.clientX,e.clientY];draw()};draw()})();"""


def html(scene: dict[str, Any], picture: str, ident: str,
         view: tuple[float, float, float] = VIEW_POINT) -> str:
    """The static picture, and a canvas that replaces it when the script runs (drag to
    turn)."""
    script = _SCRIPT % {"scene": json.dumps(scene, separators=(",", ":")), "id": ident,
                        "vx": view[0], "vy": view[1], "vz": view[2]}
    return (f'<div class="rk-graphics3d">{picture}<canvas id="{ident}" width="{SIZE}" '
            f'height="{SIZE}" style="display:none;cursor:grab" title="drag to turn">'
            f"</canvas><script>{script}</script></div>")


def render(graphics: Any, ident: str) -> dict[str, str]:
    """image/svg+xml and text/html of a Graphics3D expression; {} if it cannot be drawn."""
    try:
        scene = Scene().read(graphics).normalised()
    except (Unsupported, AttributeError, IndexError, TypeError, ValueError):
        return {}
    picture = svg(scene)
    return {"image/svg+xml": picture, "text/html": html(scene, picture, ident)}
