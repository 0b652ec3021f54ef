"""``json``: a custom template for any other sender. Each event field (``title``,
``body``, ``priority``, ``tags``, ``click``, ``category``, ``topic``,
``collapse_key``) is a Jinja2 template over the payload (``payload``, and the
payload's top-level keys as variables).

Templates are untrusted input, so they run in Jinja2's immutable sandbox with more
limits of our own, none of which a template can talk its way around:

* sources are at most :data:`SOURCE_MAX` characters; macros, includes, imports,
  ``{% call %}``, ``{% set %}…{% endset %}`` and ``{% filter %}`` blocks (they collect
  output without a limit), recursive loops, ``namespace()`` and ``dict()`` are refused
  when the hook is made;
* ``range()`` yields at most :data:`RANGE_MAX` numbers; ``*``, ``**``, ``+`` and ``~``
  refuse results over :data:`VALUE_MAX` characters (or bits); list, tuple and dict
  literals and list results may hold at most :data:`VALUE_MAX` characters of content
  (:func:`deep_size`: ``[x, x, x]`` nested a few times would make any ``str()`` of it
  enormous); every filter's text result is held to :data:`VALUE_MAX` (``tojson``,
  ``escape``, ``urlencode`` grow text); ``map`` takes only ``attribute=``; ``%`` string
  formatting, ``str.format`` and the filters that pad or repeat (``center``,
  ``indent``, ``format``, ``wordwrap``, ``batch``, ``slice``…) are not available;
  ``join`` and ``replace`` check their result's size before making it;
* a rendering may take :data:`RENDER_STEPS` Python steps and :data:`RENDER_SECONDS`
  (a trace function counts them in the rendering thread), and its output stops at
  the field's limit.

Anything refused or failing is a :class:`~.base.PayloadError` (answered 422).
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from types import FrameType
from typing import Any

from jinja2 import ChainableUndefined, nodes, pass_context, pass_eval_context
from jinja2 import Template as JinjaTemplate
from jinja2 import filters as jfilters
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.runtime import str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..models import BODY_MAX, TITLE_MAX, check_topic, parse_priority
from .apprise import html_to_text
from .base import PayloadError, Result, Template, clip, collapse_key, event, slug, url

FIELDS = ("title", "body", "priority", "tags", "click", "category", "topic", "collapse_key")
SOURCE_MAX = 2048
RANGE_MAX = 1000
#: the largest string (characters), list (items) or integer (bits) an operator may make
VALUE_MAX = 65536
LIST_MAX = 10000
INT_BITS_MAX = 4096
RENDER_STEPS = 300_000
RENDER_SECONDS = 1.0
#: output kept per field (title and body have the event's own limits)
OUTPUT_MAX = {"title": TITLE_MAX, "body": BODY_MAX}
OTHER_MAX = 512
#: methods a template may call on strings and objects (data attributes are fine)
SAFE_METHODS = frozenset({
    "lower", "upper", "strip", "lstrip", "rstrip", "title", "capitalize", "casefold",
    "startswith", "endswith", "split", "rsplit", "splitlines", "count", "find", "rfind",
    "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper", "removeprefix",
    "removesuffix", "get", "keys", "values", "items",
})  # fmt: skip
SAFE_FILTERS = frozenset({
    "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first",
    "float", "forceescape", "groupby", "int", "items", "last", "length", "list", "lower", "map",
    "max", "min", "reject", "rejectattr", "reverse", "round", "select", "selectattr", "sort",
    "string", "striptags", "title", "tojson", "trim", "truncate", "unique", "upper",
    "urlencode", "wordcount", "filesizeformat",
})  # fmt: skip
#: template constructs that are refused (they allow unbounded recursion or reach outside)
FORBIDDEN_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Macro, nodes.CallBlock, nodes.Import, nodes.FromImport, nodes.Include,
    nodes.Extends, nodes.Block, nodes.NSRef, nodes.Scope, nodes.ScopedEvalContextModifier,
    nodes.EvalContextModifier, nodes.AssignBlock, nodes.FilterBlock,
)  # fmt: skip
#: payload keys that are not made variables (they would hide ours)
RESERVED = frozenset({"payload", "headers", "range", "dict", "loop", "self", "true", "false",
                      "none", "True", "False", "None"})  # fmt: skip
#: request headers a template never sees (credentials)
SECRET_HEADERS = frozenset({"authorization", "cookie", "x-gitlab-token", "proxy-authorization"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_SPLIT = re.compile(r"[,\s]+")


class TemplateBudgetExceeded(BaseException):
    """Raised by the trace function; a BaseException so that no ``except Exception``
    in Jinja2 or a filter swallows it and carries on untraced."""


class _Budget:
    def __init__(self, steps: int, seconds: float) -> None:
        self.left = steps
        self.deadline = time.monotonic() + seconds
        self.tripped = False

    def trace(self, frame: FrameType, event_: str, arg: Any) -> Callable[..., Any] | None:
        self.left -= 1
        if self.left <= 0 or (self.left & 63 == 0 and time.monotonic() > self.deadline):
            self.tripped = True
            raise TemplateBudgetExceeded
        if event_ == "call" and frame.f_code is _UNTRACED:
            return None  # the size checks' own loop: bounded, and not the template's work
        return self.trace


def run_bounded(fn: Callable[[], Any], steps: int = RENDER_STEPS,
                seconds: float = RENDER_SECONDS) -> Any:  # fmt: skip
    """``fn()`` under a step and time budget in this thread (PayloadError past it)."""
    budget = _Budget(steps, seconds)
    previous = sys.gettrace()
    sys.settrace(budget.trace)
    try:
        return fn()
    except TemplateBudgetExceeded:
        raise PayloadError(
            f"the template needs more than {steps} steps or {seconds:g} s; simplify it"
        ) from None
    finally:
        sys.settrace(previous)


def _too_big(what: str) -> SecurityError:
    return SecurityError(f"{what} would be too large (limit {VALUE_MAX} characters)")


def _size_ok(value: Any) -> Any:
    if isinstance(value, str) and len(value) > VALUE_MAX:
        raise _too_big("the result")
    if isinstance(value, list | tuple | dict) and (
        len(value) > LIST_MAX or deep_size(value, VALUE_MAX) > VALUE_MAX
    ):
        raise SecurityError(f"a list would be too large (limit {VALUE_MAX} characters)")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > INT_BITS_MAX:
        raise SecurityError(f"a number would have more than {INT_BITS_MAX} bits")
    return value


def deep_size(value: Any, limit: int) -> int:
    """Characters of the strings plus one per other value, following containers, up to
    a little past ``limit`` (what a ``str()`` of ``value`` costs, roughly)."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            total += 1
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            total += 1
            stack.extend(item)
        else:
            total += 1
    return total


def _length(value: Any) -> int:
    if isinstance(value, str | list | tuple):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length()
    return 1


def _sized(value: Any) -> bool:
    return isinstance(value, str | list | tuple)


def _check_repeat(left: Any, right: Any) -> None:
    """Refuse ``left * right`` when the result would pass the limits."""
    for a, b in ((left, right), (right, left)):
        if isinstance(a, str | list | tuple) and isinstance(b, int):
            limit = VALUE_MAX if isinstance(a, str) else LIST_MAX
            if len(a) * b > limit:
                raise _too_big("a repetition")
    both_ints = isinstance(left, int) and isinstance(right, int)
    if both_ints and _length(left) + _length(right) > INT_BITS_MAX:
        raise SecurityError(f"a number would have more than {INT_BITS_MAX} bits")


class _Generator(CodeGenerator):
    """Compiles ``a ~ b`` to a size-checked join (Jinja2 compiles it to a bare join),
    and list, tuple and dict literals to size-checked ones: ``[x, x, x]`` holding a
    large payload value, nested a few times, would otherwise make any ``str()`` of it
    (output, ``string``, ``tojson``) enormous."""

    def visit_List(self, node: nodes.List, frame: Any) -> None:
        self.write("environment.guarded_container(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Any) -> None:
        self.write("environment.guarded_container(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Any) -> None:
        if node.ctx == "store":  # a loop's or assignment's targets
            super().visit_Tuple(node, frame)
            return
        self.write("environment.guarded_container(")
        super().visit_Tuple(node, frame)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        self.write("environment.guarded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _safe_range(*args: Any) -> range:
    rng = range(*args)
    if len(rng) > RANGE_MAX:
        raise SecurityError(f"range() is limited to {RANGE_MAX} items")
    return rng


@pass_eval_context
def _join(eval_ctx: Any, value: Any, d: Any = "", attribute: Any = None) -> str:
    items = list(value)
    sep = str(d)
    total = len(sep) * max(0, len(items) - 1)
    for item in items:
        if total > VALUE_MAX:
            break
        total += len(item) if isinstance(item, str) else len(str(item)[: VALUE_MAX + 1])
    if total > VALUE_MAX:
        raise _too_big("join's result")
    return str(jfilters.do_join(eval_ctx, items, sep, attribute))


@pass_eval_context
def _replace(eval_ctx: Any, value: Any, old: Any, new: Any, count: Any = None) -> str:
    text, before, after = str(value), str(old), str(new)
    limit = -1 if count is None or int(count) < 0 else int(count)
    n = text.count(before) if limit < 0 else min(limit, text.count(before))
    if len(text) + n * (len(after) - len(before)) > VALUE_MAX:
        raise _too_big("replace's result")
    return text.replace(before, after, limit)


def _truncate(value: Any, length: int = 255, killwords: bool = False, end: str = "...",
              leeway: int | None = None) -> str:  # fmt: skip
    size = min(int(length), VALUE_MAX)
    return str(jfilters.do_truncate(_ENV, str(value), size, killwords, str(end)[:100], leeway))


def _striptags(value: Any) -> str:
    """Markup removed and whitespace collapsed, linear whatever the installed
    MarkupSafe (older ones used a backtracking expression)."""
    return " ".join(html_to_text(str(value)).split())


def _sum(iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    total = start if isinstance(start, int | float) and not isinstance(start, bool) else 0
    for item in iterable:
        if isinstance(item, dict) and attribute is not None:
            item = item.get(attribute)
        if not isinstance(item, int | float) or isinstance(item, bool):
            raise SecurityError("sum adds numbers only")
        total = _size_ok(total + item)
    return total


def _checked_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` whose string results may not pass VALUE_MAX (``tojson``, ``escape`` and
    ``urlencode`` grow text; chained, they would grow it without bound)."""

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        if isinstance(result, str) and len(result) > VALUE_MAX:
            raise _too_big(f"the result of the filter {name!r}")
        return result

    return checked


@pass_context
def _map(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
    """``map(attribute=…)`` only: mapping a filter over a list (``map('tojson')``) would
    grow every item at once, past what the per-filter check sees."""
    if args or set(kwargs) - {"attribute", "default"}:
        raise SecurityError("map takes only attribute= (and default=) here")
    return jfilters.sync_do_map(context, value, **kwargs)


class HookSandbox(ImmutableSandboxedEnvironment):
    """The sandbox of the json template (see the module's docstring)."""

    code_generator_class = _Generator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(autoescape=False, undefined=ChainableUndefined, cache_size=0)
        kept = {k: v for k, v in self.filters.items() if k in SAFE_FILTERS}
        kept.update(join=_join, replace=_replace, truncate=_truncate, sum=_sum,
                    striptags=_striptags, map=_map)  # fmt: skip
        self.filters = {name: _checked_filter(name, fn) for name, fn in kept.items()}
        self.globals = {"range": _safe_range}

    def wrap_str_format(self, value: Any) -> None:
        """``str.format``/``format_map`` stay unreachable (Jinja2 would hand out a
        sandboxed formatter, which still pads to any width)."""
        return None

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        return not callable(value) or attr in SAFE_METHODS

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise SecurityError("'%' string formatting is not available; use ~ and filters")
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            if left not in (0, 1, -1):
                raise SecurityError("'**' takes exponents up to 64")
        elif operator == "*":
            _check_repeat(left, right)
        elif operator == "+" and _sized(left) and _sized(right):
            limit = VALUE_MAX if isinstance(left, str) else LIST_MAX
            if len(left) + len(right) > limit:
                raise _too_big("a concatenation")
        return _size_ok(super().call_binop(context, operator, left, right))

    def guarded_container(self, value: Any) -> Any:
        return _size_ok(value)

    def guarded_concat(self, parts: tuple[Any, ...]) -> str:
        total = 0
        strs = []
        for part in parts:
            s = str(part)
            total += len(s)
            if total > VALUE_MAX:
                raise _too_big("a '~' concatenation")
            strs.append(s)
        return str(str_join(strs))


_UNTRACED = deep_size.__code__
_ENV = HookSandbox()


_NODE_NAMES = {
    "Macro": "{% macro %}", "CallBlock": "{% call %}", "Import": "{% import %}",
    "FromImport": "{% from … import %}", "Include": "{% include %}", "Extends": "{% extends %}",
    "Block": "{% block %}", "NSRef": "namespace()", "AssignBlock": "{% set %}…{% endset %}",
    "FilterBlock": "{% filter %}", "Scope": "{% with %}…", "ScopedEvalContextModifier":
    "{% autoescape %}", "EvalContextModifier": "{% autoescape %}",
}  # fmt: skip


def _check_nodes(tree: nodes.Template) -> None:
    for node in tree.find_all((nodes.Node,)):
        if isinstance(node, FORBIDDEN_NODES):
            what = _NODE_NAMES.get(type(node).__name__, type(node).__name__.lower())
            raise PayloadError(f"{what} is not available in hook templates")
        if isinstance(node, nodes.For) and node.recursive:
            raise PayloadError("recursive loops are not available")
        if isinstance(node, nodes.Name) and node.name == "namespace":
            raise PayloadError("namespace() is not available")


@lru_cache(maxsize=256)
def _compile_unbounded(source: str) -> JinjaTemplate:
    tree = _ENV.parse(source)
    _check_nodes(tree)
    return _ENV.from_string(tree)


def compile_field(name: str, source: Any) -> JinjaTemplate:
    """The compiled template of field ``name`` (PayloadError naming ``fields.<name>``)."""
    where = f"fields.{name}"
    if not isinstance(source, str):
        raise PayloadError("must be a string (a Jinja2 template)", where)
    if len(source) > SOURCE_MAX:
        raise PayloadError(f"at most {SOURCE_MAX} characters", where)
    try:
        return run_bounded(lambda: _compile_unbounded(source), steps=2_000_000, seconds=2.0)  # type: ignore[no-any-return]
    except PayloadError as exc:
        raise PayloadError(exc.message, where) from None
    except TemplateError as exc:
        raise PayloadError(f"not a valid template: {str(exc)[:200]}", where) from None
    except (RecursionError, MemoryError, ValueError, TypeError, OverflowError) as exc:
        raise PayloadError(f"not a valid template ({type(exc).__name__})", where) from None


def check_fields(fields: Any) -> dict[str, str]:
    """The json template's ``fields``, checked and compiled once (raises PayloadError)."""
    if not isinstance(fields, dict) or not fields:
        raise PayloadError("the json template needs 'fields': templates for title, body, …",
                           "fields")  # fmt: skip
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise PayloadError(f"unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})",
                           "fields")  # fmt: skip
    out = {}
    for name in FIELDS:
        if name in fields and fields[name] is not None:
            compile_field(name, fields[name])
            out[name] = fields[name]
    if not (out.get("title", "").strip() or out.get("body", "").strip()):
        raise PayloadError("give at least a title or a body template", "fields.body")
    return out


def _context(payload: Any, headers: Mapping[str, str]) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    if isinstance(payload, dict):
        for key, value in payload.items():
            if isinstance(key, str) and key not in RESERVED and _IDENT.fullmatch(key):
                ctx[key] = value
    ctx["payload"] = payload
    ctx["headers"] = {k: v for k, v in headers.items()
                      if k not in SECRET_HEADERS and "signature" not in k}  # fmt: skip
    return ctx


def _render_one(tpl: JinjaTemplate, ctx: dict[str, Any], limit: int) -> str:
    out: list[str] = []
    size = 0
    chunks: Iterator[str] = tpl.generate(ctx)
    try:
        for chunk in chunks:
            out.append(chunk)
            size += len(chunk)
            if size > limit:
                break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return "".join(out)[: limit + 1]


def render_fields(fields: Mapping[str, str], payload: Any,
                  headers: Mapping[str, str]) -> dict[str, str]:  # fmt: skip
    """Each field's text, rendered under the budget (PayloadError naming the field)."""
    ctx = _context(payload, headers)
    out: dict[str, str] = {}
    for name in FIELDS:
        source = fields.get(name)
        if not source:
            continue
        tpl = compile_field(name, source)
        limit = OUTPUT_MAX.get(name, OTHER_MAX)
        try:
            out[name] = run_bounded(lambda t=tpl, n=limit: _render_one(t, ctx, n))  # type: ignore[misc]
        except PayloadError as exc:
            raise PayloadError(exc.message, f"fields.{name}") from None
        except SecurityError as exc:
            raise PayloadError(f"refused: {str(exc)[:200]}", f"fields.{name}") from None
        except Exception as exc:  # noqa: BLE001 - a user's template failing is a 422, never a 500
            raise PayloadError(f"rendering failed ({type(exc).__name__}: {str(exc)[:200]})",
                               f"fields.{name}") from None  # fmt: skip
    return out


def render(payload: Any, headers: Mapping[str, str], options: Mapping[str, Any]) -> Result:
    texts = render_fields(options.get("fields") or {}, payload, headers)
    title = texts.get("title", "").strip()
    body = texts.get("body", "").strip()
    if not title and not body:
        raise PayloadError("the templates rendered neither a title nor a body", "fields.body")
    ev = event(title=clip(title, TITLE_MAX), body=clip(body, BODY_MAX))
    value = texts.get("priority", "").strip()
    if value:
        try:
            ev["priority"] = parse_priority(value)
        except ValueError as exc:
            raise PayloadError(f"rendered {value[:40]!r}: {exc}", "fields.priority") from None
    value = texts.get("tags", "")
    found = [t for t in (slug(v) for v in _SPLIT.split(value)[:32]) if t]
    if found:
        ev["tags"] = list(dict.fromkeys(found))[:16]
    value = texts.get("click", "").strip()
    if value:
        link = url(value)
        if link is None:
            raise PayloadError(f"rendered {value[:60]!r}, not an http(s) URL", "fields.click")
        ev["click"] = link
    value = texts.get("category", "").strip()
    if value:
        category = slug(value)
        if category is None:
            raise PayloadError(f"rendered {value[:40]!r}, not a category", "fields.category")
        ev["category"] = category
    value = texts.get("topic", "").strip()
    if value:
        try:
            ev["topic"] = check_topic(value)
        except ValueError as exc:
            raise PayloadError(f"rendered {value[:80]!r}: {exc}", "fields.topic") from None
    value = texts.get("collapse_key", "").strip()
    if value:
        ev["collapse_key"] = collapse_key("", value)
    return Result([ev])


def sample() -> tuple[Any, dict[str, str]]:
    return {"title": "Backup finished", "message": "120 GB in 14 minutes", "status": "ok",
            "host": "nas", "url": "https://nas.example.com/backups"}, {}  # fmt: skip


TEMPLATE = Template("json", render, sample)
