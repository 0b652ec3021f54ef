"""``slack``: Slack's incoming-webhook JSON (``text``, ``blocks``, ``attachments``),
so that anything able to post to Slack can post here.

Slack's ``mrkdwn`` becomes Markdown (``*bold*`` → ``**bold**``, ``<url|label>`` →
``[label](url)``, ``<!channel>`` → ``@channel``); the first ``header`` block or
attachment title becomes the title; an attachment's ``color`` sets the priority
(danger/red 5, warning/orange/yellow 4, good/green 2); ``image`` blocks and
attachments' ``image_url`` the image; buttons with URLs become actions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..models import BODY_MAX
from .base import (
    PayloadError,
    Result,
    Template,
    action,
    clip,
    event,
    get_text,
    lst,
    obj,
    tags,
    text,
)

#: text is converted after being cut to this size (the body holds BODY_MAX anyway)
TEXT_MAX = 2 * BODY_MAX
#: how deep rich_text elements are followed
RICH_DEPTH = 6
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")
_STRIKE = re.compile(r"(?<![\w~])~([^~\n]+)~(?![\w~])")
_HEX = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")
COLORS = {"danger": 5, "warning": 4, "good": 2}


def _link(token: str, markdown: bool) -> str:
    """One ``<…>`` token of Slack's markup."""
    target, _, label = token.partition("|")
    if target.startswith("!"):  # <!channel>, <!here>, <!subteam^ID|@team>, <!date^…|text>
        if label:
            return label
        return "@" + target[1:].split("^", 1)[0]
    if target.startswith(("@", "#")):
        return (target[0] + label.lstrip("@#")) if label else target
    if markdown and label:
        return f"[{label}]({target})"
    return f"{label} ({target})" if label else target


def mrkdwn(value: str, markdown: bool = True) -> str:
    """Slack's markup as Markdown (or plain text); linear in the text's length."""
    value = value[:TEXT_MAX]
    out: list[str] = []
    i = 0
    while True:
        start = value.find("<", i)
        if start < 0:
            out.append(value[i:])
            break
        end = value.find(">", start)
        if end < 0:
            out.append(value[i:])
            break
        inner = value.rfind("<", start, end)  # the '<' closest to this '>'
        out.append(value[i:inner])
        out.append(_link(value[inner + 1 : end], markdown))
        i = end + 1
    result = "".join(out).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    if markdown:
        result = _BOLD.sub(r"**\1**", result)
        result = _STRIKE.sub(r"~~\1~~", result)
    return result


def color_priority(color: Any) -> int | None:
    """danger/red → 5, warning/orange/yellow → 4, good/green → 2, else None."""
    if not isinstance(color, str):
        return None
    named = COLORS.get(color.strip().lower())
    if named is not None:
        return named
    m = _HEX.fullmatch(color.strip())
    if m is None:
        return None
    digits = m.group(1)
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    r, g, b = (int(digits[k : k + 2], 16) for k in (0, 2, 4))
    if r >= 150 and g < 110 and b < 110:
        return 5
    if r >= 180 and 110 <= g <= 230 and b < 120:
        return 4
    if g >= 120 and r < 120 and b < 150:
        return 2
    return None


def _text_obj(value: Any, where: str) -> tuple[str, bool]:
    """A Slack text object ``{"type": "mrkdwn"|"plain_text", "text"}``: (text, is mrkdwn)."""
    if isinstance(value, str):
        return value, True
    data = obj(value, where)
    return get_text(data, "text", where), data.get("type") != "plain_text"


def _rich(elements: Any, where: str, depth: int = 0) -> str:
    if depth > RICH_DEPTH or not isinstance(elements, list):
        return ""
    out = []
    for i, el in enumerate(elements):
        if not isinstance(el, dict):
            continue
        if isinstance(el.get("text"), str):
            out.append(el["text"])
        elif el.get("type") == "link" and isinstance(el.get("url"), str):
            out.append(el["url"])
        elif "elements" in el:
            sep = "\n" if el.get("type") in ("rich_text_list", "rich_text_preformatted") else ""
            out.append(_rich(el["elements"], f"{where}[{i}].elements", depth + 1) + sep)
    return "".join(out)


class _Collected:
    def __init__(self) -> None:
        self.title = ""
        self.parts: list[str] = []
        self.image: str | None = None
        self.click: str | None = None
        self.actions: list[dict[str, str] | None] = []
        self.markdown = False


def _button(el: dict[str, Any], where: str, got: _Collected) -> None:
    if el.get("type") == "button" and el.get("url"):
        label, _ = _text_obj(el.get("text"), f"{where}.text")
        got.actions.append(action(label or "Open", el.get("url")))


def _blocks(blocks: Any, where: str, got: _Collected) -> None:
    for i, block in enumerate(lst(blocks, where)):
        b = obj(block, f"{where}[{i}]")
        kind = b.get("type")
        at = f"{where}[{i}]"
        if kind == "header":
            value, _ = _text_obj(b.get("text"), f"{at}.text")
            if not got.title:
                got.title = value
            else:
                got.parts.append(f"**{value}**")
        elif kind == "section":
            if b.get("text") is not None:
                value, md = _text_obj(b.get("text"), f"{at}.text")
                got.markdown |= md
                got.parts.append(mrkdwn(value) if md else value)
            fields = [
                _text_obj(f, f"{at}.fields[{k}]")
                for k, f in enumerate(lst(b.get("fields"), f"{at}.fields"))
            ]
            if fields:
                got.parts.append("\n".join(mrkdwn(v) if md else v for v, md in fields))
            accessory = b.get("accessory")
            if isinstance(accessory, dict):
                _button(accessory, f"{at}.accessory", got)
                if accessory.get("type") == "image" and got.image is None:
                    got.image = accessory.get("image_url")
        elif kind == "context":
            bits = []
            for k, el in enumerate(lst(b.get("elements"), f"{at}.elements")):
                if isinstance(el, dict) and el.get("type") in ("mrkdwn", "plain_text"):
                    value, md = _text_obj(el, f"{at}.elements[{k}]")
                    bits.append(mrkdwn(value) if md else value)
            if bits:
                got.parts.append(" · ".join(bits))
        elif kind == "image":
            if got.image is None:
                got.image = b.get("image_url")
            if b.get("title") is not None:
                got.parts.append(_text_obj(b.get("title"), f"{at}.title")[0])
        elif kind == "actions":
            for k, el in enumerate(lst(b.get("elements"), f"{at}.elements")):
                if isinstance(el, dict):
                    _button(el, f"{at}.elements[{k}]", got)
        elif kind == "rich_text":
            got.parts.append(_rich(b.get("elements"), f"{at}.elements"))
        elif kind == "divider":
            got.parts.append("---")


def render(payload: Any, headers: Mapping[str, str], options: Mapping[str, Any]) -> Result:
    p = obj(payload, "payload")
    got = _Collected()
    markdown_on = p.get("mrkdwn") is not False
    priority: int | None = None
    if p.get("blocks") is not None:
        _blocks(p.get("blocks"), "blocks", got)
    if not got.parts:  # without blocks, ``text`` is the message (with them, its fallback)
        message = get_text(p, "text", "")
        if message:
            got.markdown |= markdown_on
            got.parts.append(mrkdwn(message) if markdown_on else message)
    for i, att in enumerate(lst(p.get("attachments"), "attachments")):
        a = obj(att, f"attachments[{i}]")
        at = f"attachments[{i}]"
        color = color_priority(a.get("color"))
        if color is not None:
            priority = max(priority or 0, color)
        for key in ("pretext", "author_name"):
            if get_text(a, key, at):
                got.parts.append(mrkdwn(get_text(a, key, at)))
        title = get_text(a, "title", at)
        if title and not got.title:
            got.title = mrkdwn(title, markdown=False)
        elif title:
            got.parts.append(f"**{mrkdwn(title)}**")
        if get_text(a, "text", at):
            got.parts.append(mrkdwn(get_text(a, "text", at)))
        lines = []
        for k, f in enumerate(lst(a.get("fields"), f"{at}.fields")):
            f = obj(f, f"{at}.fields[{k}]")
            name = get_text(f, "title", f"{at}.fields[{k}]")
            value = mrkdwn(get_text(f, "value", f"{at}.fields[{k}]"))
            lines.append(f"**{name}**: {value}" if name else value)
        if lines:
            got.parts.append("\n".join(lines))
        if a.get("blocks") is not None:
            _blocks(a.get("blocks"), f"{at}.blocks", got)
        if get_text(a, "footer", at):
            got.parts.append(mrkdwn(get_text(a, "footer", at)))
        got.markdown = True
        if got.image is None and a.get("image_url"):
            got.image = a.get("image_url")
        if got.click is None:
            got.click = a.get("title_link") or a.get("author_link")
        for k, act in enumerate(lst(a.get("actions"), f"{at}.actions")):
            if isinstance(act, dict) and act.get("url"):
                got.actions.append(action(text(act.get("text"), f"{at}.actions[{k}].text") or "Open",
                                          act.get("url")))  # fmt: skip
    body = "\n\n".join(part.strip() for part in got.parts if part and part.strip())
    if not body and not got.title:
        raise PayloadError("a Slack message needs 'text', 'blocks' or 'attachments'", "text")
    if not got.title and isinstance(p.get("username"), str):
        got.title = p["username"].strip()
    if got.click is None:
        first = next((a for a in got.actions if a is not None), None)
        got.click = first["url"] if first else None
    channel = p.get("channel")
    return Result([
        event(
            title=clip(got.title, 256), body=body, fmt="markdown" if got.markdown else "text",
            priority=priority, tags=tags(channel.lstrip("#@") if isinstance(channel, str) else None),
            click=got.click, image=got.image, icon=p.get("icon_url"), actions=got.actions,
        )
    ])  # fmt: skip


def sample() -> tuple[Any, dict[str, str]]:
    return {
        "username": "TrueNAS",
        "text": "*New alerts* on <https://nas.example.com|nas>:\n• Pool tank is DEGRADED",
        "attachments": [
            {"color": "danger", "title": "Pool tank", "title_link": "https://nas.example.com/ui/storage",
             "text": "One disk of the pool is offline.",
             "fields": [{"title": "Disk", "value": "sdb", "short": True}]},
        ],
    }, {}  # fmt: skip


TEMPLATE = Template("slack", render, sample, form_payload=True)
