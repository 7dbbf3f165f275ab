"""Forged deletes, pins, mutes, edits and reactions against a running node (see the scene)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from node.crypto import sender_keys
from node.group import keys as K
from node.group.bodies import Delete, Mute, Pin
from node.group.content import Content, Edit, React
from node.group.events import Event, EventId
from node.ids import PeerId, short_id
from node.wire.strict import pack
from tests.integration import LogWatch, one_line
from tests.integration.test_groups_bad_input import Scene, scene


def rejected_line(author: PeerId, reason: str) -> str:
    """The log line a node writes when it rejects ``author``'s event for ``reason``."""
    return rf"^group lab: rejected event [0-9a-f]{{12}} from {short_id(author)}: {reason}"


def say(s: Scene, content: Content | bytes) -> Event:
    """Mallory's real, encrypted message with ``content`` (or a raw plaintext)."""
    own = s.mallory.own[s.gid]
    if isinstance(content, bytes):
        index = own.key.index
        key, used, blob = sender_keys.encrypt(
            own.key, content, K.private_ad(s.gid, s.mallory.peer_id, own.epoch, index))
        s.mallory.own[s.gid] = K.OwnKey(own.epoch, key, own.recipients)
        body = K.PrivateMessage(used, blob)
    else:
        s.mallory.own[s.gid], body = K.encrypt_private(own, s.gid, s.mallory.peer_id, content,
                                                       K.Counters(), os.urandom)
    return s.mallory.replicas[s.gid].author(body)


async def test_unauthorised_actions_are_rejected_or_ignored(tmp_path: Path,
                                                             logs: LogWatch) -> None:
    async with scene(tmp_path) as s:
        replica = await s.join()
        await s.share_sender_key()
        words = await s.bob_says_relayed("bob's own words")
        replica.receive(*s.history())
        mallory = s.mallory.peer_id
        for body, reason in [
            (Delete(words.id), "only the author or an admin may delete this message"),
            (Pin(words.id, True), "only owner and admins may pin"),
            (Mute(s.bob.node.peer_id, True, 0), "only owner and admins may mute"),
            (Delete(EventId(b"\x07" * 32)), "no event 070707070707 in this event's past"),
        ]:
            forged = s.mallory.forge(s.gid, body)
            await s.mallory.send(s.gid, forged)
            one_line(await logs.wait_for(rejected_line(mallory, reason + "$"),
                                         level=logging.WARNING))
            await s.barrier()
            assert not s.stored(forged)
        # encrypted content the core cannot judge: every member ignores it after decrypting
        edit = say(s, Edit(words.id, "bob says mallory is right"))
        unknown = say(s, React(EventId(b"\x09" * 32), "🎉"))
        garbage = say(s, pack({"v": 2, "t": "react", "target": words.id, "emoji": "x" * 99,
                               "remove": False}))
        await s.mallory.share(s.gid, edit, unknown, garbage)  # valid events: bob gets them
        who = short_id(mallory)
        one_line(await logs.wait_for(
            rf"ignoring edit {edit.id.hex()[:12]} from {who}: only the author may edit",
            level=logging.WARNING))
        one_line(await logs.wait_for(
            rf"ignoring reaction {unknown.id.hex()[:12]} from {who}: no message 090909090909",
            level=logging.WARNING))
        one_line(await logs.wait_for(
            rf"cannot decrypt {garbage.id.hex()[:12]} from {who}: .*reaction is 1..16",
            level=logging.WARNING))
        [row] = [r for r in s.alice.log(s.group) if r["id"] == words.id.hex()]
        assert row["text"] == "bob's own words" and not row["edited"] and row["reactions"] == {}
        assert s.a_group.core.deleted == {}
        await s.still_serving()
