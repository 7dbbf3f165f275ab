"""``kith chat`` on the command line: registered, documented, and clear without a terminal."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from node.cli.main import build_parser, main
from tests.lab.procs import kith_cli


def test_chat_is_a_command_with_help(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["chat", "team", "--no-mdns", "--peer", "127.0.0.1:7000"])
    assert args.group == "team" and args.no_mdns and args.peer == ["127.0.0.1:7000"]
    with pytest.raises(SystemExit):
        main(["chat", "--help"])
    help_text = capsys.readouterr().out
    for word in ("/help", "Tab", "in its own", "attaches", "--desktop-notify"):
        assert word in help_text


async def test_without_a_terminal_it_says_so() -> None:
    with tempfile.TemporaryDirectory(prefix="kc-") as tmp:
        result = await kith_cli(Path(tmp), "chat")
    assert result.returncode == 1
    assert "kith chat needs a terminal" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_chat_takes_the_node_options_of_run() -> None:
    """Issue 15, item 9: the options `kith run` has and the hints name."""
    args = build_parser().parse_args(["chat", "--max-file-size", "2.5",
                                      "--mdns-interface", "eth0", "--name", "bob"])
    assert args.max_file_size == int(2.5 * (1 << 20)) and args.mdns_interface == "eth0"
    from node.cli.chat import attach_note, ignored_options

    ignored = ignored_options(args, args.chat_defaults)
    assert ignored == ["--name bob", "--mdns-interface eth0", "--max-file-size"]
    assert attach_note("/tmp/a", ["--name bob"])("alice") == (
        "a node is already running in /tmp/a as alice; attaching to it (--name bob ignored)")
    plain = build_parser().parse_args(["chat"])
    assert ignored_options(plain, plain.chat_defaults) == []
    assert attach_note("/tmp/a", [])("alice") == (
        "a node is already running in /tmp/a as alice; attaching to it")
