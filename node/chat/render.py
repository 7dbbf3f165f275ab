"""The model as plain lines of text: what each pane of the screen shows.

Every string that came from the network goes through ``clean`` here, at the
one place where text turns into screen lines, so no path can skip it. Each
line is ``(style, text)``; the style names the urwid palette entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from node.chat.model import ChatModel, GroupInfo, MemberInfo, View
from node.chat.text import clean, columns, fit, shorten

Line = tuple[str, str]
Clock = Callable[[float], str]

#: Characters of a quoted message shown above a reply.
QUOTE_CHARS = 60
INDENT = "     "
#: Pinned messages listed above the conversation.
MAX_PINNED_SHOWN = 3


def local_time(when: float) -> str:
    return time.strftime("%H:%M", time.localtime(when))


def message_lines(model: ChatModel, view: View, clock: Clock = local_time) -> list[Line]:
    """One message: the quote it replies to, the message itself, its reactions."""
    lines: list[Line] = []
    number = model.handle_of(str(view.get("id", "")))
    handle = f"[{number}]" if number is not None else "[?]"
    when = clock(view["time"]) if view.get("time") is not None else "--:--"
    author = clean(str(view.get("author_name") or "?"))
    preview = view.get("reply_preview")
    if isinstance(preview, dict):
        quoted = clean(str(preview.get("text") or "(deleted)"))
        lines.append(("quote", f"{INDENT}  ┌ {clean(str(preview.get('author_name') or '?'))}: "
                               f"{shorten(quoted, QUOTE_CHARS)}"))
    elif view.get("reply_to"):
        lines.append(("quote", f"{INDENT}  ┌ reply to a message not shown here"))
    if view.get("deleted"):
        by = clean(str(view.get("deleted_by") or author))
        body = f"(message deleted by {by})"
        style = "deleted"
    elif view.get("text") is None:
        body = "[cannot decrypt: sent before you joined]"
        style = "deleted"
    else:
        # A message's own line breaks start new rows (each row cleaned on its own, so no
        # control character reaches the terminal); other controls stay escaped.
        first, *more = str(view["text"]).split("\n")
        body = clean(first) or ("sent a file" if view.get("file") else "")
        style = "mention" if view.get("mentions_me") else ("mine" if view.get("mine") else "msg")
    extras = []
    if view.get("edited"):
        extras.append("(edited)")
    if view.get("pinned"):
        extras.append("[pinned]")
    if view.get("mine"):
        extras.append(delivery_mark(model, view))
    tail = (" " + " ".join(extras)) if extras else ""
    if view.get("deleted") or view.get("text") is None:
        more = []
    if more:  # the marks go after the last row of the message
        lines.append((style, f"{handle:>4} {when} {author}: {body}"))
        lines.extend((style, f"{INDENT}  {clean(row)}") for row in more[:-1])
        lines.append((style, f"{INDENT}  {clean(more[-1])}{tail}"))
    else:
        lines.append((style, f"{handle:>4} {when} {author}: {body}{tail}"))
    file = view.get("file")
    if isinstance(file, dict) and not view.get("deleted"):
        lines.append(("reaction", f"{INDENT}     {file_text(file)}"))
    reactions = view.get("reactions") or {}
    if isinstance(reactions, dict) and reactions:
        parts = [f"{clean(str(emoji))} {', '.join(clean(str(n)) for n in names)}"
                 for emoji, names in reactions.items() if names]
        if parts:
            lines.append(("reaction", f"{INDENT}     " + "  ·  ".join(parts)))
    return lines


def size_text(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def file_text(file: dict[str, object]) -> str:
    """The attachment line under a message: name, size, and how much of it is here."""
    size, have = _count(file.get("size")), _count(file.get("bytes_have"))
    state = str(file.get("state") or "")
    if state == "fetching":
        note = f" receiving {have * 100 // max(size, 1)}%"
    elif state == "too large":
        note = " not fetched (over this node's size limit)"
    elif state == "complete":
        note = " /save to keep it"
    else:
        note = f" {clean(state)}"
    return f"📎 {clean(str(file.get('name') or '?'))} ({size_text(size)}){note}"


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def delivery_mark(model: ChatModel, view: View) -> str:
    """``[pending]``, ``[sent]``, ``[delivered]`` or ``[read by bob, carol]``."""
    read_by = view.get("read_by") or []
    if read_by:
        return f"[read by {', '.join(clean(model.name_of(str(p))) for p in read_by)}]"
    return f"[{view.get('state') or 'sent'}]"


def event_lines(model: ChatModel, view: View, clock: Clock = local_time) -> list[Line]:
    if view.get("kind") == "message":
        return message_lines(model, view, clock)
    when = clock(view["time"]) if view.get("time") is not None else "--:--"
    info = view.get("info") or view.get("kind") or "event"
    return [("info", f"{'':>4} {when} * {clean(str(info))}")]


def pinned_lines(model: ChatModel, group: GroupInfo) -> list[Line]:
    """The group's pinned messages, above the conversation (``pinned`` in the group view)."""
    by_id = {v.get("id"): v for v in model.events}
    lines: list[Line] = []
    for event_id in group.pinned[-MAX_PINNED_SHOWN:]:
        view = by_id.get(event_id)
        if view is None:
            continue
        number = model.handle_of(event_id)
        text = clean(str(view.get("text") or ""))
        lines.append(("pinned", f"pinned [{number}] {clean(str(view.get('author_name')))}: "
                                f"{shorten(text, QUOTE_CHARS)}"))
    return lines


def gap_lines(group: GroupInfo | None) -> list[Line]:
    """Causal gaps sync has not filled yet (``missing`` in the group view)."""
    if group is None:
        return []
    return [("gap", f"{'':>4} ... {n} event(s) from {clean(who)} not yet received")
            for who, n in sorted(group.missing.items()) if n > 0]


def conversation_lines(model: ChatModel, now: float, clock: Clock = local_time) -> list[Line]:
    group = model.current_group
    if group is None:
        return [("info", "No groups yet. Create one with /create NAME, or wait to be added "
                         "(/help lists the commands)."),
                *(("notice", line) for line in model.notices)]
    lines: list[Line] = pinned_lines(model, group)
    for view in model.events:
        lines.extend(event_lines(model, view, clock))
    lines.extend(gap_lines(group))
    typing = model.typing_now(group.id, now)
    if typing:
        who = ", ".join(clean(n) for n in typing)
        lines.append(("typing", f"{'':>4} {who} {'is' if len(typing) == 1 else 'are'} typing…"))
    lines.extend(("notice", line) for line in model.notices)
    return lines


#: Columns a group's name keeps at least in a narrow groups pane ("pic…").
MIN_NAME = 4
#: Marks of the groups pane, and their short forms for a pane too narrow for them.
SHORT_BADGES = {"[muted]": "[m]", "[left]": "[l]"}


def group_lines(model: ChatModel, width: int | None = None) -> list[Line]:
    """The groups pane; with ``width``, each row fits in it (never wraps): a long name is
    shortened (…) so that its marks (unread count, ``[muted]``, ``[left]``) stay on its
    row; the marks take their short forms (``[m]``, ``[l]``) only when even a 4-column
    name leaves them no room."""
    lines: list[Line] = [("title", "Groups")]
    for g in model.groups:
        marker = ">" if g.id == model.current else " "
        badges = []
        if g.unread and g.id != model.current:
            badges.append(f"({g.unread})")
        if g.muted:
            badges.append("[muted]")
        if not g.member:
            badges.append("[left]")
        text = group_row(marker, clean(g.name), badges, width)
        style = "current" if g.id == model.current else ("unread" if g.unread else "group")
        lines.append((style, text))
    if not model.groups:
        lines.append(("info", "  (none)"))
    return lines


def group_row(marker: str, name: str, badges: list[str], width: int | None) -> str:
    """One row of the groups pane, within ``width`` columns if given."""
    def row(name: str, badges: list[str]) -> str:
        return f"{marker} {name} {' '.join(badges)}".rstrip()

    if width is None or columns(row(name, badges)) <= width:
        return row(name, badges)
    for marks, least in ((badges, MIN_NAME), ([SHORT_BADGES.get(b, b) for b in badges], 2)):
        room = width - 2 - (columns(" " + " ".join(marks)) if marks else 0)
        if room >= min(least, columns(name)):
            return row(fit(name, room), marks)
    return fit(row(name, badges), width)


def presence_text(member: MemberInfo, model: ChatModel, now: float, clock: Clock) -> str:
    if member.me:
        return "you"
    if model.member_typing(member, now):
        state = "typing…"
    elif member.presence == "offline" and member.last_seen:
        state = f"offline, seen {clock(member.last_seen)}"
    else:
        state = member.presence
    return f"{state}, muted" if member.muted else state


def member_lines(model: ChatModel, now: float, clock: Clock = local_time) -> list[Line]:
    lines: list[Line] = [("title", f"Members ({len(model.members)})")]
    dots = {"online": "●", "reachable": "◐"}
    for m in model.members:
        dot = "●" if m.me else dots.get(m.presence, "○")
        role = "" if m.role == "member" else f" {m.role}"
        lines.append(("member" if m.presence == "online" or m.me else "away",
                      f"{dot} {clean(m.name)}{role}"))
        lines.append(("away", f"    {presence_text(m, model, now, clock)}"))
    return lines


def header_text(model: ChatModel) -> str:
    group = model.current_group
    where = f" · {clean(group.name)}" if group is not None else ""
    mode = f" · node {model.node_mode}" if model.node_mode else ""
    return (f" kith chat · {clean(model.my_name)} ({model.me[:8]}){where}{mode}"
            "   /help · Tab completes · Ctrl-C quits")
