from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from node.datadir import ENV_DATA, DataDir, resolve_data_dir
from node.errors import ConfigError


def test_identity_is_created_with_mode_0600_and_reloads(tmp_path: Path) -> None:
    d = DataDir(tmp_path / "node")
    key = d.load_or_create_identity()
    assert stat.S_IMODE(d.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(d.path.stat().st_mode) == 0o700
    assert d.load_or_create_identity().seed == key.seed


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    d = DataDir(tmp_path)
    d.create_identity()
    os.chmod(d.key_file, mode)
    with pytest.raises(ConfigError, match=f"mode {mode:04o}.*chmod 600"):
        d.load_identity()


def test_never_overwrites_a_key(tmp_path: Path) -> None:
    d = DataDir(tmp_path)
    d.create_identity()
    with pytest.raises(ConfigError, match="already exists"):
        d.create_identity()


@pytest.mark.parametrize(
    ("content", "message"),
    [("not a key", "not a Kith key file"), ("kith-ed25519-seed:abcd", "damaged")],
)
def test_damaged_key_file(tmp_path: Path, content: str, message: str) -> None:
    d = DataDir(tmp_path)
    d.key_file.write_text(content)
    os.chmod(d.key_file, 0o600)
    with pytest.raises(ConfigError, match=message):
        d.load_identity()


def test_missing_identity_says_run_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kith init"):
        DataDir(tmp_path).load_identity()


def test_name_round_trip(tmp_path: Path) -> None:
    d = DataDir(tmp_path)
    d.save_name("alice")
    assert d.load_name() == "alice"


def test_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DATA, str(tmp_path / "env"))
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv(ENV_DATA)
    assert "kith" in str(resolve_data_dir(None))


def test_socket_path_too_long(tmp_path: Path) -> None:
    d = DataDir(tmp_path / ("x" * 120))
    with pytest.raises(ConfigError, match="too long"):
        d.check_socket_path()


def test_profile_is_private_whatever_the_umask(tmp_path: Path) -> None:
    d = DataDir(tmp_path / "data")
    old = os.umask(0o022)
    try:
        d.save_name("alice")
        d.save_name("alice again")  # replaced, still 0600
    finally:
        os.umask(old)
    assert stat.S_IMODE(d.profile_file.stat().st_mode) == 0o600
    assert d.load_name() == "alice again"
    assert not list(d.path.glob("*.tmp"))
