"""The input line: ``/commands`` into node requests, and Tab completion.

``interpret(line, model)`` is pure: it returns a ``Request`` (an op for the
node, with what to say when it worked) or a ``Local`` action (help, switch
group, quit), or raises ``UsageError`` with the one line to show. Messages are
referred to by their handle (the ``[7]`` in front of them), peers by name,
short id or peer id, groups by name or id prefix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from node.chat.model import ChatModel, View
from node.chat.text import clean, is_clean
from node.group.bodies import MAX_TEXT

ROLES = ("admin", "member", "guest")
MAX_EMOJI = 16


def common_prefix(words: list[str]) -> str:
    first, last = min(words), max(words)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


class UsageError(Exception):
    """The line cannot be run; the message says why (shown in the status line)."""


@dataclass(frozen=True)
class Request:
    """One op for the node. ``then``: what to do with the answer ("switch", "peers")."""

    op: str
    params: dict[str, Any]
    done: str
    command: str
    then: str = ""


@dataclass(frozen=True)
class Local:
    """Something the client does by itself: "help", "quit", "switch", "notice"."""

    action: str
    arg: str = ""


@dataclass(frozen=True)
class Spec:
    usage: str
    help: str
    peer_args: tuple[int, ...] = field(default=())


#: Every command, in the order /help lists them. ``peer_args``: argument positions that
#: name a peer (for Tab completion).
COMMANDS: dict[str, Spec] = {
    "create": Spec("/create NAME [open [whitelist|blacklist]]",
                   "create a private group (or an open one, announced on the LAN) and open it"),
    "discover": Spec("/discover", "list open groups announced nearby"),
    "join": Spec("/join GROUP", "join an open group heard nearby (name or id)"),
    "open": Spec("/open GROUP", "show another group (also Ctrl-N / Ctrl-P)"),
    "add": Spec("/add PEER [admin|member|guest]", "add a peer to this group", (1,)),
    "remove": Spec("/remove PEER", "remove a member", (1,)),
    "role": Spec("/role PEER admin|member|guest", "change a member's role", (1,)),
    "ban": Spec("/ban PEER", "remove a member and keep them out", (1,)),
    "leave": Spec("/leave", "leave this group"),
    "reply": Spec("/reply N TEXT", "reply to message [N]"),
    "edit": Spec("/edit N TEXT", "replace the text of your message [N]"),
    "delete": Spec("/delete N", "delete message [N] (yours; admins: any)"),
    "react": Spec("/react N EMOJI", "react to [N]; the same again takes it back"),
    "pin": Spec("/pin N", "pin message [N] (owner/admin)"),
    "unpin": Spec("/unpin N", "unpin message [N]"),
    "mute": Spec("/mute  |  /mute @MEMBER [MINUTES]",
                 "no notifications from this group  |  admin: silence a member "
                 "(for MINUTES, else until /unmute)", (1,)),
    "unmute": Spec("/unmute  |  /unmute @MEMBER", "undo /mute", (1,)),
    "file": Spec("/file PATH", "send a file (encrypted; members fetch it in chunks)"),
    "save": Spec("/save N [DIR]", "save the file of message [N] into DIR (default: the "
                 "current directory); never overwrites"),
    "peers": Spec("/peers", "list the peers this node knows"),
    "help": Spec("/help", "this list (Esc closes it)"),
    "quit": Spec("/quit", "leave the client (also Ctrl-C); a node it started stops too"),
}
ALIASES = {"q": "quit", "exit": "quit", "g": "open", "?": "help"}
POLICIES = ("whitelist", "blacklist")


def help_lines() -> list[str]:
    lines = ["Type a message and press Enter to send it; @name mentions a member.",
             "Messages carry a number, [N]: use it in /reply, /edit, /delete, /react, /pin",
             "(and in kith commands: `kith react GROUP N 👍`; it is your node's number).",
             "Tab completes commands, peer and group names. PgUp/PgDn scroll. "
             "//text sends a line starting with /."]
    lines += [f"  {s.usage}  -  {s.help}" for s in COMMANDS.values()]
    lines += ["Keys: Enter sends; Tab completes (again: the next match; after /file, paths); "
              "Up/Down: the lines you sent; Ctrl-A/Ctrl-E: start/end of the line; Ctrl-U, "
              "Ctrl-K, Ctrl-W delete to the start, to the end, the word before the cursor; "
              "PgUp/PgDn scroll; Ctrl-N/Ctrl-P (Alt-Down/Up) switch groups; Ctrl-C or Ctrl-D "
              "quits."]
    return lines


def interpret(line: str, model: ChatModel) -> Request | Local:
    """What the user asked for with ``line``; raises ``UsageError``."""
    text = line.strip()
    if not text:
        raise UsageError("")
    if not text.startswith("/") or text.startswith("//"):
        group = _group(model)
        body = line[1:] if text.startswith("//") else line
        if len(body.strip()) > MAX_TEXT:
            raise UsageError(f"this message is {len(body.strip()):,} characters; one message "
                             f"holds at most {MAX_TEXT:,} (shorten it, or send it as a /file)")
        return Request("send", {"group": group, "text": body.strip()}, "", "send")
    word, _, rest = text[1:].partition(" ")
    name = ALIASES.get(word.lower(), word.lower())
    spec = COMMANDS.get(name)
    if spec is None:
        raise UsageError(f"unknown command /{clean(word)} (see /help)")
    args = rest.split()
    try:
        return _HANDLERS[name](model, args, rest.strip())
    except IndexError:
        raise UsageError(f"usage: {spec.usage}") from None


# -- handlers -------------------------------------------------------------------

Handler = Callable[[ChatModel, list[str], str], "Request | Local"]


def _group(model: ChatModel) -> str:
    if model.current is None:
        raise UsageError("no group yet: /create NAME first")
    return model.current


def _needs(args: list[str], n: int) -> None:
    if len(args) < n:
        raise IndexError


def _message(model: ChatModel, ref: str) -> View:
    number = ref.strip("[]#")
    if not number.isdigit():
        raise UsageError(f"{clean(ref)!r} is not a message number: use the [N] shown before it")
    view = model.event_for(int(number))
    if view is None:
        shown = list(model.handles.get(model.current or "", {}).values())
        older = " among the messages loaded here" if shown and int(number) < min(shown) else ""
        raise UsageError(f"no message [{int(number)}]{older} in this group")
    return view


def resolve_peer(model: ChatModel, ref: str) -> str:
    """A peer id for a name, short id or peer id (a leading @ is allowed)."""
    ref = ref.removeprefix("@")
    compact = ref.replace("-", "").replace(" ", "")
    if len(compact) == 56:
        return compact.lower()  # a full peer id: the node checks it
    known: dict[str, tuple[str, str]] = {}
    for p in model.peers:
        known[p.peer_id] = (p.name, p.short_id)
    for m in model.members:
        known[m.peer_id] = (m.name, m.short_id)
    for matches in (
        [pid for pid, (name, _) in known.items() if name == ref],
        [pid for pid, (name, _) in known.items() if name.lower() == ref.lower()],
        [pid for pid, (_, short) in known.items() if len(ref) >= 4 and short.startswith(ref)],
    ):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(f"{clean(ref)!r} is more than one peer: use their short id")
    raise UsageError(f"no peer called {clean(ref)!r} (see /peers)")


def _role(word: str) -> str:
    if word.lower() not in ROLES:
        raise UsageError("a role is admin, member or guest")
    return word.lower()


def _create(model: ChatModel, args: list[str], rest: str) -> Request:
    """``/create NAME`` (private); ``/create NAME open [whitelist|blacklist]`` (open)."""
    _needs(args, 1)
    words = rest.split()
    policy = None
    if len(words) >= 2 and words[-1].lower() in POLICIES and words[-2].lower() == "open":
        policy, words = words[-1].lower(), words[:-2]
    elif len(words) >= 2 and words[-1].lower() == "open":
        policy, words = "blacklist", words[:-1]
    name = " ".join(words)
    if policy is None:
        return Request("group.create", {"name": rest}, f"created group {clean(rest)}", "/create",
                       then="switch")
    return Request("group.create", {"name": name, "mode": "open", "policy": policy},
                   f"created open group {clean(name)} ({policy}), announced on the LAN",
                   "/create", then="switch")


def _discover(model: ChatModel, args: list[str], rest: str) -> Request:
    return Request("group.discover", {"timeout": 3}, "", "/discover", then="discover")


def _join(model: ChatModel, args: list[str], rest: str) -> Request:
    _needs(args, 1)
    return Request("group.join", {"group": rest}, f"joined {clean(rest)}", "/join",
                   then="switch")


def _open(model: ChatModel, args: list[str], rest: str) -> Local:
    _needs(args, 1)
    group = model.find_group(rest)
    if group is None:
        raise UsageError(f"no group {clean(rest)!r} (Tab completes group names)")
    return Local("switch", group.id)


def _member_op(op: str, verb: str) -> Handler:
    def handler(model: ChatModel, args: list[str], rest: str) -> Request:
        _needs(args, 1)
        group = _group(model)
        peer = resolve_peer(model, args[0])
        params: dict[str, Any] = {"group": group, "peer": peer}
        if op == "group.add":
            params["role"] = _role(args[1]) if len(args) > 1 else "member"
        return Request(op, params, f"{verb} {clean(args[0])}", f"/{op.split('.')[1]}")

    return handler


def _role_cmd(model: ChatModel, args: list[str], rest: str) -> Request:
    _needs(args, 2)
    return Request("group.role", {"group": _group(model), "peer": resolve_peer(model, args[0]),
                                  "role": _role(args[1])},
                   f"{clean(args[0])} is now {args[1].lower()}", "/role")


def _leave(model: ChatModel, args: list[str], rest: str) -> Request:
    return Request("group.leave", {"group": _group(model)}, "you left the group", "/leave")


def _text_after(rest: str) -> str:
    """``rest`` without its first word (the message number), spacing kept."""
    parts = rest.split(None, 1)
    if len(parts) < 2 or not parts[1].strip():
        raise IndexError
    return parts[1]


def _reply(model: ChatModel, args: list[str], rest: str) -> Request:
    _needs(args, 2)
    target = _message(model, args[0])
    return Request("send", {"group": _group(model), "text": _text_after(rest),
                            "reply_to": target["id"]}, "", "/reply")


def _edit(model: ChatModel, args: list[str], rest: str) -> Request:
    _needs(args, 2)
    target = _message(model, args[0])
    if not target.get("mine"):
        raise UsageError("you can only edit your own messages")
    return Request("edit", {"group": _group(model), "event": target["id"],
                            "text": _text_after(rest)}, f"edited [{args[0]}]", "/edit")


def _delete(model: ChatModel, args: list[str], rest: str) -> Request:
    _needs(args, 1)
    target = _message(model, args[0])
    return Request("delete", {"group": _group(model), "event": target["id"]},
                   f"deleted [{args[0]}]", "/delete")


def _react(model: ChatModel, args: list[str], rest: str) -> Request:
    _needs(args, 2)
    target = _message(model, args[0])
    emoji = args[1]
    if not 1 <= len(emoji) <= MAX_EMOJI or not is_clean(emoji):
        raise UsageError(f"a reaction is 1..{MAX_EMOJI} printable characters")
    names = (target.get("reactions") or {}).get(emoji) or []
    remove = model.my_name in names
    params = {"group": _group(model), "event": target["id"], "emoji": emoji}
    if remove:
        params["remove"] = True
    verb = "took back" if remove else "reacted"
    return Request("react", params, f"{verb} {emoji} on [{args[0]}]", "/react")


def _pin(unpin: bool) -> Handler:
    def handler(model: ChatModel, args: list[str], rest: str) -> Request:
        _needs(args, 1)
        target = _message(model, args[0])
        params: dict[str, Any] = {"group": _group(model), "event": target["id"]}
        if unpin:
            params["unpin"] = True
        return Request("pin", params, f"{'un' if unpin else ''}pinned [{args[0]}]",
                       "/unpin" if unpin else "/pin")

    return handler


def _mute(unmute: bool) -> Handler:
    def handler(model: ChatModel, args: list[str], rest: str) -> Request:
        group = _group(model)
        name = "/unmute" if unmute else "/mute"
        if not args:
            return Request("group.notify", {"group": group, "muted": not unmute},
                           "notifications " + ("on" if unmute else "off") + " for this group",
                           name)
        peer = resolve_peer(model, args[0])
        params: dict[str, Any] = {"group": group, "peer": peer}
        if unmute:
            params["unmute"] = True
            done = f"unmuted {clean(args[0])}"
        else:
            minutes = None
            if len(args) > 1:
                if not args[1].isdigit() or int(args[1]) < 1:
                    raise UsageError("minutes must be a positive whole number")
                minutes = int(args[1])
            params["minutes"] = minutes
            done = f"muted {clean(args[0])}" + (f" for {minutes} min" if minutes else "")
        return Request("group.mute", params, done, name)

    return handler


def _file(model: ChatModel, args: list[str], rest: str) -> Request:
    """``/file PATH``: the whole rest of the line is the path (spaces allowed)."""
    _needs(args, 1)
    path = rest.strip()
    if len(path) >= 2 and path[0] == path[-1] and path[0] in "'\"":
        path = path[1:-1]  # a path pasted in quotes
    return Request("file.send", {"group": _group(model), "file": path},
                   f"sent {clean(path.rsplit('/', 1)[-1])}", "/file", then="upload")


def _save(model: ChatModel, args: list[str], rest: str) -> Request:
    """``/save N [DIR]``: DIR is the rest of the line after N (spaces allowed)."""
    _needs(args, 1)
    target = _message(model, args[0])
    file = target.get("file")
    if not isinstance(file, dict):
        raise UsageError(f"message [{args[0]}] has no file")
    parts = rest.split(None, 1)
    directory = parts[1].strip() if len(parts) > 1 else "."
    return Request("file.save", {"group": _group(model), "event": target["id"],
                                 "dir": directory}, "", "/save", then="save")


def _peers(model: ChatModel, args: list[str], rest: str) -> Request:
    return Request("peers", {}, "", "/peers", then="peers")


_HANDLERS: dict[str, Handler] = {
    "create": _create,
    "discover": _discover,
    "join": _join,
    "open": _open,
    "add": _member_op("group.add", "added"),
    "remove": _member_op("group.remove", "removed"),
    "ban": _member_op("group.ban", "banned"),
    "role": _role_cmd,
    "leave": _leave,
    "reply": _reply,
    "edit": _edit,
    "delete": _delete,
    "react": _react,
    "pin": _pin(False),
    "unpin": _pin(True),
    "mute": _mute(False),
    "unmute": _mute(True),
    "file": _file,
    "save": _save,
    "peers": _peers,
    "help": lambda model, args, rest: Local("help"),
    "quit": lambda model, args, rest: Local("quit"),
}


def peer_lines(model: ChatModel) -> list[str]:
    if not model.peers:
        return ["no peers known yet"]
    return [f"  {p.short_id}  {clean(p.name or '?')}  {p.state}" for p in model.peers]


def discovered_lines(groups: list[dict[str, Any]]) -> list[str]:
    """``/discover``'s answer (``group.discover`` entries), one line per group."""
    if not groups:
        return ["no open groups heard nearby yet (they are announced over mDNS)"]
    lines = ["Open groups nearby:"]
    for g in groups:
        servers = g.get("servers") or []
        joined = "  (joined)" if g.get("joined") else ""
        lines.append(f"  {clean(str(g.get('name', '?')))}  {str(g.get('id', ''))[:12]}  "
                     f"{clean(str(g.get('policy', '?')))}  {len(servers)} member(s) serving"
                     f"{joined}")
    return lines


# -- completion -------------------------------------------------------------------


def _insertable(name: str, short: str) -> str:
    """How to type a peer: its name if that is one clean word, else its short id."""
    return name if name and is_clean(name) and not any(c.isspace() for c in name) else short


def list_dir(path: str) -> Iterable[tuple[str, bool]]:
    """``(name, is a directory)`` for each entry of ``path`` (nothing if it cannot be read)."""
    try:
        with os.scandir(path) as entries:
            return [(e.name, e.is_dir()) for e in entries]
    except OSError:
        return []


def path_options(token: str, listdir: Callable[[str], Iterable[tuple[str, bool]]]) -> list[str]:
    """Paths that complete ``token`` as typed (``~`` kept); directories end with ``/``."""
    folder, _, base = token.rpartition("/")
    typed = folder + "/" if "/" in token else ""
    where = os.path.expanduser(typed) if typed else "."
    return [typed + name + ("/" if is_dir else "") for name, is_dir in listdir(where)
            if name.startswith(base) and (base.startswith(".") or not name.startswith("."))]


def complete(line: str, model: ChatModel,
             listdir: Callable[[str], Iterable[tuple[str, bool]]] = list_dir,
             ) -> tuple[str, list[str]]:
    """Complete the last word of ``line``: the new line and the candidates (if several).

    After ``/file`` the rest of the line is a path (spaces and all), completed from
    the file system of the client."""
    word, space, rest = line.partition(" ")
    if space and ALIASES.get(word[1:].lower(), word[1:].lower()) == "file" \
            and word.startswith("/"):
        return _complete_path(word + space, rest, listdir)
    head, _, token = line.rpartition(" ") if " " in line else ("", "", line)
    words = line.split()
    if not head and token.startswith("/"):
        options = ["/" + c for c in COMMANDS if c.startswith(token[1:].lower())]
    else:
        command = words[0][1:].lower() if words and words[0].startswith("/") else ""
        command = ALIASES.get(command, command)
        position = len(words) - (0 if line.endswith(" ") or not line else 1)
        spec = COMMANDS.get(command)
        if command == "open" and position == 1:
            options = [g.name for g in model.groups if is_clean(g.name)]
        elif spec is not None and position in spec.peer_args:
            pool = [(p.name, p.short_id) for p in model.peers] if command == "add" else []
            pool += [(m.name, m.short_id) for m in model.members if not m.me]
            at = "@" if token.startswith("@") else ""
            options = [at + _insertable(n, s) for n, s in pool]
        elif token.startswith("@"):
            options = ["@" + _insertable(m.name, m.short_id) for m in model.members if not m.me]
        else:
            return line, []
    options = sorted({o for o in options if o.lower().startswith(token.lower())})
    if not options:
        return line, []
    prefix = head + (" " if head else "")
    if len(options) == 1:
        return prefix + options[0] + " ", []
    common = common_prefix(options)
    if len(common) > len(token):
        return prefix + common, options
    return line, options


def _complete_path(head: str, token: str,
                   listdir: Callable[[str], Iterable[tuple[str, bool]]]) -> tuple[str, list[str]]:
    options = sorted(path_options(token, listdir))
    if not options:
        return head + token, []
    if len(options) == 1:
        return head + options[0], []  # a directory stays open for the next Tab
    common = common_prefix(options)
    return head + (common if len(common) > len(token) else token), options
