"""The node's data directory: where it is, what lives in it, and the key file.

Layout (all created on first use, the directory mode 0700)::

    identity.key    the Ed25519 seed, one line "kith-ed25519-seed:<64 hex>", mode 0600
    profile.json    {"name": ...}: the display name sent to peers, mode 0600
    control.sock    the control socket of the running node (mode 0600)
    node.lock       held (flock) by the running node, so two cannot share a directory

The key file must not be readable by anyone but its owner: a node refuses to
start otherwise, with a message that says how to fix it.
"""

from __future__ import annotations

import getpass
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from node.crypto.keys import SEED_LEN, IdentityKey
from node.errors import ConfigError, StorageError

ENV_DATA = "KITH_DATA"
KEY_FILE = "identity.key"
PROFILE_FILE = "profile.json"
CONTROL_SOCKET = "control.sock"
LOCK_FILE = "node.lock"
DATABASE_FILE = "kith.db"
_KEY_PREFIX = "kith-ed25519-seed:"
#: Unix socket paths are limited to 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("kith", appauthor=False))


def resolve_data_dir(arg: str | None) -> Path:
    """``--data`` wins, then ``$KITH_DATA``, then the platform's user data directory."""
    if arg:
        return Path(arg).expanduser()
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser()
    return default_data_dir()


@dataclass(frozen=True, slots=True)
class DataDir:
    path: Path

    @property
    def key_file(self) -> Path:
        return self.path / KEY_FILE

    @property
    def profile_file(self) -> Path:
        return self.path / PROFILE_FILE

    @property
    def control_socket(self) -> Path:
        return self.path / CONTROL_SOCKET

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def database_file(self) -> Path:
        return self.path / DATABASE_FILE

    def ensure(self) -> None:
        """Create the directory (mode 0700) if it is missing; refuse one others can write."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create data directory {self.path}: {exc.strerror}") from exc
        if not self.path.is_dir():
            raise ConfigError(f"data directory {self.path} is not a directory")
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o022:  # another user could swap the control socket for its own
            raise ConfigError(
                f"data directory {self.path} is writable by others (mode {mode:04o}); "
                f"fix it with: chmod 700 {self.path}"
            )

    def has_identity(self) -> bool:
        return self.key_file.exists()

    def load_identity(self) -> IdentityKey:
        """Read the key file, refusing one that others can read."""
        path = self.key_file
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ConfigError(f"no identity in {self.path}: run `kith init` first") from None
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"identity key {path} is readable by others (mode {mode:04o}); "
                f"fix it with: chmod 600 {path}"
            )
        try:
            text = path.read_text("ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise StorageError(f"cannot read identity key {path}: {exc}") from exc
        if not text.startswith(_KEY_PREFIX):
            raise ConfigError(f"identity key {path} is not a Kith key file")
        try:
            seed = bytes.fromhex(text[len(_KEY_PREFIX) :])
        except ValueError:
            seed = b""
        if len(seed) != SEED_LEN:
            raise ConfigError(f"identity key {path} is damaged (expected {SEED_LEN} bytes)")
        return IdentityKey(seed)

    def create_identity(self) -> IdentityKey:
        """Make a new key pair and write it with mode 0600 (never overwrites)."""
        self.ensure()
        key = IdentityKey.generate()
        line = f"{_KEY_PREFIX}{key.seed.hex()}\n".encode("ascii")
        try:
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ConfigError(f"{self.key_file} already exists; not overwriting it") from None
        except OSError as exc:
            raise StorageError(f"cannot write {self.key_file}: {exc.strerror}") from exc
        with os.fdopen(fd, "wb") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        return key

    def load_or_create_identity(self) -> IdentityKey:
        if self.has_identity():
            return self.load_identity()
        return self.create_identity()

    def load_name(self) -> str:
        try:
            data = json.loads(self.profile_file.read_text("utf-8"))
        except FileNotFoundError:
            return default_name()
        except (OSError, ValueError) as exc:
            raise StorageError(f"cannot read {self.profile_file}: {exc}") from exc
        name = data.get("name") if isinstance(data, dict) else None
        return name if isinstance(name, str) else default_name()

    def save_name(self, name: str) -> None:
        self.ensure()
        tmp = self.profile_file.with_suffix(".tmp")
        try:
            # 0600 like everything else here, whatever the umask: the name is the user's.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # an old .tmp left by a crash keeps its mode otherwise
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps({"name": name}) + "\n")
            tmp.replace(self.profile_file)
        except OSError as exc:
            raise StorageError(f"cannot write {self.profile_file}: {exc.strerror or exc}") from exc

    def check_socket_path(self) -> None:
        if len(os.fsencode(self.control_socket)) > MAX_SOCKET_PATH:
            raise ConfigError(
                f"data directory path is too long for a control socket "
                f"({self.control_socket}); use a shorter --data path"
            )


def default_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "kith"
