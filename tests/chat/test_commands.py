"""The input line: commands into requests, usage errors, Tab completion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.chat.commands import (
    COMMANDS,
    Local,
    Request,
    UsageError,
    complete,
    discovered_lines,
    help_lines,
    interpret,
    resolve_peer,
)
from node.chat.model import ChatModel
from tests.chat.helpers import BOB, CAROL, GROUP, ME, group_view, member, message

DAVE = "d" * 56


def make_model() -> ChatModel:
    model = ChatModel(me=ME, my_name="alice")
    model.set_groups([group_view(), group_view(id="ab" * 16, name="lab")])
    model.set_log(GROUP, [message(1, text="lunch?"), message(2, author=ME, text="yes",
                                                          reactions={"👍": ["alice"]})])
    model.set_members(GROUP, [member(ME, "alice"), member(BOB, "bob"),
                              member(CAROL, "Carol Smith")])
    model.set_peers([{"peer_id": DAVE, "short_id": "dddddddd", "name": "dave",
                      "state": "online"}, {"peer_id": None, "name": "", "state": "reachable"}])
    return model


def request(line: str) -> Request:
    action = interpret(line, make_model())
    assert isinstance(action, Request)
    return action


def test_plain_text_is_sent_to_the_current_group() -> None:
    r = request("hello there")
    assert (r.op, r.params) == ("send", {"group": GROUP, "text": "hello there"})
    assert request("//not a command").params["text"] == "/not a command"


def test_reply_edit_delete_react_pin_use_handles() -> None:
    lunch, yes = message(1)["id"], message(2)["id"]
    assert request("/reply 1 sure, at noon").params == {
        "group": GROUP, "text": "sure, at noon", "reply_to": lunch}
    assert request("/edit 2 no").params == {"group": GROUP, "event": yes, "text": "no"}
    assert request("/delete [1]").params == {"group": GROUP, "event": lunch}
    assert request("/react 1 🎉").params == {"group": GROUP, "event": lunch, "emoji": "🎉"}
    assert request("/pin #1").params == {"group": GROUP, "event": lunch}
    assert request("/unpin 1").params == {"group": GROUP, "event": lunch, "unpin": True}


def test_react_again_takes_it_back() -> None:
    r = request("/react 2 👍")
    assert r.params["remove"] is True and r.op == "react"


def test_message_errors() -> None:
    model = make_model()
    with pytest.raises(UsageError, match="no message \\[9\\]"):
        interpret("/reply 9 hi", model)
    with pytest.raises(UsageError, match="not a message number"):
        interpret("/delete bob", model)
    with pytest.raises(UsageError, match="your own"):
        interpret("/edit 1 mine now", model)
    with pytest.raises(UsageError, match="usage: /reply N TEXT"):
        interpret("/reply 1", model)
    with pytest.raises(UsageError, match="reaction is"):
        interpret("/react 1 \x1b[2J", model)


def test_member_commands_resolve_names() -> None:
    assert request("/add dave").params == {"group": GROUP, "peer": DAVE, "role": "member"}
    assert request("/add @dave admin").params["role"] == "admin"
    assert request("/remove bob").params == {"group": GROUP, "peer": BOB}
    assert request("/ban BOB").op == "group.ban"
    assert request("/role bob guest").params == {"group": GROUP, "peer": BOB, "role": "guest"}
    assert request("/add cccccccc").params["peer"] == CAROL  # by short id
    assert request("/leave").op == "group.leave"
    with pytest.raises(UsageError, match="role is"):
        interpret("/role bob boss", make_model())


def test_peer_resolution() -> None:
    model = make_model()
    full = "x" * 56
    assert resolve_peer(model, full) == full
    assert resolve_peer(model, "@Carol Smith") == CAROL
    with pytest.raises(UsageError, match="no peer called 'zed'"):
        resolve_peer(model, "zed")
    model.set_peers([{"peer_id": "b" * 55 + "q", "short_id": "bbbbbbbb", "name": "bob"}])
    with pytest.raises(UsageError, match="more than one"):
        resolve_peer(model, "bob")


def test_mute_syntax() -> None:
    assert request("/mute").params == {"group": GROUP, "muted": True}
    assert request("/mute").op == "group.notify"
    assert request("/unmute").params == {"group": GROUP, "muted": False}
    r = request("/mute @bob 10")
    assert (r.op, r.params) == ("group.mute", {"group": GROUP, "peer": BOB, "minutes": 10})
    assert request("/mute bob").params["minutes"] is None
    assert request("/unmute @bob").params == {"group": GROUP, "peer": BOB, "unmute": True}
    with pytest.raises(UsageError, match="minutes"):
        interpret("/mute bob soon", make_model())


def test_local_commands() -> None:
    model = make_model()
    assert interpret("/help", model) == Local("help")
    assert interpret("/quit", model) == Local("quit")
    assert interpret("/q", model) == Local("quit")
    assert interpret("/open lab", model) == Local("switch", "ab" * 16)
    create = interpret("/create big team", model)
    assert isinstance(create, Request) and create.params == {"name": "big team"}
    assert create.then == "switch"
    assert isinstance(interpret("/peers", model), Request)


def test_unknown_command_and_no_group() -> None:
    with pytest.raises(UsageError, match="unknown command /frob"):
        interpret("/frob", make_model())
    with pytest.raises(UsageError, match="unknown command /\\\\x1b"):
        interpret("/\x1b", make_model())
    with pytest.raises(UsageError, match="/create NAME first"):
        interpret("hello", ChatModel())


def test_help_lists_every_command() -> None:
    text = "\n".join(help_lines())
    for name in COMMANDS:
        assert f"/{name}" in text


@given(st.text())
def test_any_line_gives_an_action_or_a_usage_error(line: str) -> None:
    try:
        action = interpret(line, make_model())
    except UsageError:
        return
    assert isinstance(action, Request | Local)


# -- completion ----------------------------------------------------------------------


def test_complete_commands() -> None:
    model = make_model()
    assert complete("/rea", model) == ("/react ", [])
    line, options = complete("/re", model)
    assert line == "/re" and options == ["/react", "/remove", "/reply"]
    assert complete("/un", model) == ("/un", ["/unmute", "/unpin"])


def test_complete_peers_members_and_groups() -> None:
    model = make_model()
    assert complete("/add da", model) == ("/add dave ", [])  # peers for /add
    assert complete("/remove b", model) == ("/remove bob ", [])
    assert complete("/remove da", model) == ("/remove da", [])  # dave is not a member
    assert complete("/remove ", model)[1] == ["bob", "cccccccc"]  # "Carol Smith": short id
    assert complete("/mute @b", model) == ("/mute @bob ", [])
    assert complete("/open l", model) == ("/open lab ", [])


def test_complete_mentions_in_text() -> None:
    model = make_model()
    assert complete("hi @b", model) == ("hi @bob ", [])
    assert complete("hi b", model) == ("hi b", [])


def test_names_with_control_characters_complete_to_the_short_id() -> None:
    model = make_model()
    model.set_members(GROUP, [member(BOB, "bo\x1b[2Jb")])
    assert complete("/remove b", model) == ("/remove bbbbbbbb ", [])


def test_open_groups_create_discover_and_join() -> None:
    assert request("/create picnic").params == {"name": "picnic"}
    r = request("/create Hall B open")
    assert (r.op, r.params, r.then) == (
        "group.create", {"name": "Hall B", "mode": "open", "policy": "blacklist"}, "switch")
    assert request("/create hall open whitelist").params == {
        "name": "hall", "mode": "open", "policy": "whitelist"}
    r = request("/discover")
    assert (r.op, r.then) == ("group.discover", "discover")
    r = request("/join Hall B")
    assert (r.op, r.params, r.then) == ("group.join", {"group": "Hall B"}, "switch")
    with pytest.raises(UsageError, match="usage: /join GROUP"):
        interpret("/join", make_model())


def test_discovered_groups_are_listed_escaped() -> None:
    assert discovered_lines([]) == [
        "no open groups heard nearby yet (they are announced over mDNS)"]
    lines = discovered_lines([{"name": "hall\x1b[2J", "id": "ab" * 32, "policy": "blacklist",
                               "servers": [{}, {}], "joined": True}])
    assert lines[1] == ("  hall\\x1b[2J  abababababab  blacklist  2 member(s) serving  (joined)")


def test_a_message_too_long_for_one_event_is_refused_with_the_numbers() -> None:
    model = make_model()
    assert request("x" * 16_384).op == "send"
    with pytest.raises(UsageError, match="20,000 characters; one message holds at most 16,384"):
        interpret("x" * 20_000, model)
