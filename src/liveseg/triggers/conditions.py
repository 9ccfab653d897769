"""The condition language of trigger parameters: small, safe, vectorised.

``area_um2 > 80 and mean_intensity > 1.5 * frame_median`` is parsed once by
:func:`compile_condition` into a :class:`Condition` and evaluated over the measured
columns (one value per object) and frame-level numbers; never ``eval``.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from liveseg.plugin_api import TriggerState
    from liveseg.types import Frame, FrameResult

__all__ = ["FRAME_NAMES", "Condition", "compile_condition", "frame_namespace"]


FRAME_NAMES: tuple[str, ...] = (
    "count",
    "frame_mean",
    "frame_median",
    "frame_std",
    "frame_min",
    "frame_max",
    "t",
    "p",
    "c",
    "z",
    "frames",
    "objects_total",
    "triggered_series",
    "time_s",
    "fast",
)
"""Frame-level and cumulative names every condition can use besides the object columns."""

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCS: dict[str, Callable[[Any], Any]] = {
    "abs": np.abs,
    "sqrt": np.sqrt,
    "log": np.log,
    "min": lambda a: float(np.min(a)) if np.size(a) else math.nan,
    "max": lambda a: float(np.max(a)) if np.size(a) else math.nan,
    "mean": lambda a: float(np.mean(a)) if np.size(a) else math.nan,
    "median": lambda a: float(np.median(a)) if np.size(a) else math.nan,
    "sum": lambda a: float(np.sum(a)),
    "any": lambda a: bool(np.any(a)),
    "all": lambda a: bool(np.all(a)),
}


class Condition:
    """A parsed condition: call it with a namespace of arrays and numbers.

    Supports numbers, names (dotted ones too: ``class_fraction.pore``), ``+ - * / // %
    **``, comparisons (chained too), ``and``, ``or``, ``not`` (element-wise on arrays)
    and the functions ``abs sqrt log min max mean median sum any all``. Anything else
    is a :class:`ConfigError` at parse time.
    """

    def __init__(self, expr: str) -> None:
        self.expr = expr
        try:
            tree = ast.parse(expr.strip(), mode="eval")
        except SyntaxError as exc:
            raise ConfigError(f"condition {expr!r}: {exc.msg}") from None
        self._tree = tree.body
        self.names: frozenset[str] = frozenset()
        names: set[str] = set()
        self._check(self._tree, names)
        self.names = frozenset(names)

    def _check(self, node: ast.AST, names: set[str]) -> None:
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(_dotted(node, self.expr))
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float | bool):
                raise ConfigError(f"condition {self.expr!r}: only numbers are allowed")
        elif isinstance(node, ast.BoolOp | ast.UnaryOp | ast.BinOp | ast.Compare):
            ops: list[ast.AST] = []
            if isinstance(node, ast.BinOp):
                ops = [node.op]
            elif isinstance(node, ast.Compare):
                ops = list(node.ops)
            bad = [o for o in ops if type(o) not in _BINOPS and type(o) not in _CMPOPS]
            if bad:
                raise ConfigError(
                    f"condition {self.expr!r}: operator {type(bad[0]).__name__} not allowed"
                )
            if isinstance(node, ast.UnaryOp) and not isinstance(
                node.op, ast.Not | ast.USub | ast.UAdd
            ):
                raise ConfigError(f"condition {self.expr!r}: operator not allowed")
            for child in ast.iter_child_nodes(node):
                if not isinstance(child, ast.operator | ast.cmpop | ast.boolop | ast.unaryop):
                    self._check(child, names)
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS:
                allowed = ", ".join(sorted(_FUNCS))
                raise ConfigError(
                    f"condition {self.expr!r}: only these functions are allowed: {allowed}"
                )
            if len(node.args) != 1 or node.keywords:
                raise ConfigError(f"condition {self.expr!r}: functions take one argument")
            self._check(node.args[0], names)
        else:
            raise ConfigError(
                f"condition {self.expr!r}: {type(node).__name__} is not allowed "
                "(use names, numbers, arithmetic, comparisons, and/or/not)"
            )

    def __call__(self, namespace: Mapping[str, Any]) -> Any:
        """Evaluate; names missing from ``namespace`` raise ``NameError`` listing the rest."""
        missing = self.names - set(namespace)
        if missing:
            raise NameError(
                f"condition {self.expr!r}: unknown name(s) {sorted(missing)}; "
                f"available: {', '.join(sorted(namespace))}"
            )
        return self._eval(self._tree, namespace)

    def _eval(self, node: ast.AST, ns: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return ns[node.id]
        if isinstance(node, ast.Attribute):
            return ns[_dotted(node, self.expr)]
        if isinstance(node, ast.BoolOp):
            values = [self._eval(v, ns) for v in node.values]
            fn = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = values[0]
            for v in values[1:]:
                out = fn(out, v)
            return out
        if isinstance(node, ast.UnaryOp):
            v = self._eval(node.operand, ns)
            if isinstance(node.op, ast.Not):
                return np.logical_not(v)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](self._eval(node.left, ns), self._eval(node.right, ns))
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, ns)
            res: Any = True
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comp, ns)
                res = np.logical_and(res, _CMPOPS[type(op)](left, right))
                left = right
            return res
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            return _FUNCS[node.func.id](self._eval(node.args[0], ns))
        raise AssertionError(f"unchecked node {node!r}")  # pragma: no cover

    def __repr__(self) -> str:
        return f"Condition({self.expr!r})"


def _dotted(node: ast.Attribute, expr: str) -> str:
    """The dotted name of ``a.b.c`` (``class_fraction.pore``): a key, never an attribute.

    The namespace is looked up by the whole dotted string; no attribute is ever read.
    """
    parts = [node.attr]
    inner: ast.AST = node.value
    while isinstance(inner, ast.Attribute):
        parts.append(inner.attr)
        inner = inner.value
    if not isinstance(inner, ast.Name):
        raise ConfigError(f"condition {expr!r}: only dotted names such as class_fraction.pore")
    parts.append(inner.id)
    if any(p.startswith("_") for p in parts):
        raise ConfigError(f"condition {expr!r}: names may not start with '_'")
    return ".".join(reversed(parts))


def compile_condition(expr: str) -> Condition:
    """Parse ``expr`` once (at config time) into a reusable :class:`Condition`."""
    return Condition(expr)


def frame_namespace(
    frame: Frame,
    objects: Mapping[str, np.ndarray],
    state: TriggerState | None = None,
    result: FrameResult | None = None,
) -> dict[str, Any]:
    """Names a condition sees for one frame: object columns, frame stats, cumulative state.

    With ``result``, a chain's class-map numbers too (measured once by the frame
    processor): ``class_fraction.<class>``, ``class_objects.<class>`` and, where they
    apply, ``grain.g_planimetric`` … and ``pore.area_fraction`` … (see
    :func:`liveseg.materials.frame_summary`).
    """
    img = np.asarray(frame.image)
    idx = dict(frame.event.index) if frame.event is not None else {}
    labels = objects.get("label")
    ns: dict[str, Any] = {
        "count": len(labels) if labels is not None else 0,
        "t": int(idx.get("t", 0)),
        "p": int(idx.get("p", frame.position)),
        "c": int(idx.get("c", 0)),
        "z": int(idx.get("z", 0)),
    }
    if img.size:
        ns.update(
            frame_mean=float(img.mean()),
            frame_median=float(np.median(img)),
            frame_std=float(img.std()),
            frame_min=float(img.min()),
            frame_max=float(img.max()),
        )
    if state is not None:
        ns.update(state.numbers())
    if result is not None:
        ns.update(result.extra.get("class_summary") or {})
    ns.update({k: np.asarray(v) for k, v in objects.items()})
    return ns
