"""`kith log` output for message features (escaped text) and the new commands' parsing."""

from __future__ import annotations

from typing import Any

from node.cli.common import escape
from node.cli.groups import format_event
from node.cli.main import build_parser


def message(**fields: Any) -> dict[str, Any]:
    base = {"kind": "message", "id": "ab" * 32, "author_name": "bob", "time": None,
            "text": "hi", "mine": False, "state": "received"}
    return base | fields


def test_terminal_control_sequences_are_shown_escaped() -> None:
    hostile = "ok\x1b[2J\x1b]0;pwned\x07\u202eevil\r\x9b31m"
    line = format_event(message(text=hostile, author_name="m\x1b[31mallory"))
    assert "\x1b" not in line and "\x07" not in line and "\u202e" not in line
    assert "\r" not in line and "\x9b" not in line
    assert "\\x1b[2J" in line and "\\u202e" in line and "m\\x1b[31mallory" in line
    assert escape("family 👨\u200d👩\u200d👧 ok") == "family 👨\u200d👩\u200d👧 ok"


def test_replies_edits_reactions_pins_and_deletes_are_shown() -> None:
    line = format_event(message(
        text="yes!", reply_to="cd" * 32, edited=True, pinned=True,
        reply_preview={"author_name": "alice", "text": "lunch?", "deleted": False},
        reactions={"👍": ["carol", "bob"]}))
    quoted, said, reactions = line.split("\n")
    assert quoted.strip() == "> alice: lunch?"
    assert said.endswith("bob: yes!  (edited)  [pinned]")
    assert reactions.strip() == "👍 2 (carol, bob)"
    gone = format_event(message(text=None, deleted=True, deleted_by="alice"))
    assert gone.endswith("bob: [deleted by alice]")


def test_new_commands_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["send", "team", "sure", "--reply", "1a2b3c4d"])
    assert args.reply == "1a2b3c4d"
    args = parser.parse_args(["edit", "team", "1a2b3c4d", "new", "text"])
    assert (args.op, args.text) == ("edit", ["new", "text"])
    args = parser.parse_args(["react", "team", "1a2b3c4d", "👍", "--remove"])
    assert (args.op, args.emoji, args.remove) == ("react", "👍", True)
    args = parser.parse_args(["pin", "team", "1a2b3c4d", "--unpin"])
    assert args.unpin
    assert parser.parse_args(["delete", "team", "1a2b3c4d"]).op == "delete"
    args = parser.parse_args(["group", "mute", "team", "PEER", "--minutes", "10"])
    assert (args.minutes, args.unmute) == (10, False)
    assert parser.parse_args(["group", "notify", "team", "--mute"]).muted is True
    assert parser.parse_args(["group", "notify", "team", "--unmute"]).muted is False
