"""Installing Kith with no internet: ``./scripts/bundle``, ``./scripts/run`` from a
wheelhouse, and ``kith share`` serving a real ``pip install`` over loopback.

The wheelhouse is built once for this module, for this machine only (``--here``; the
full multi-platform bundle takes longer and needs nothing more than pip's own
resolution). Building it needs PyPI (or pip's cache); every install afterwards runs with
``--no-index`` and an unreachable index URL, so touching an index would fail the test.

The bundle's self-check (``./scripts/bundle --check``: every target it claims resolves
from the wheelhouse alone) is tested on a small wheelhouse of made-up wheels for several
platforms and Pythons, so it runs in seconds with no network; the full 15-target
wheelhouse is checked by hand (docs/usage.md says how).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.lab.procs import kith_cli, kith_command, kith_env, running

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
SERVING = r"^Serving on (?P<url>http://127\.0\.0\.1:(?P<port>\d+)/)"
INSTALL_TIMEOUT = 120.0
#: Any use of an index fails fast: nothing listens on port 9 (discard).
NO_INDEX = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple/", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("bundle") / "wheelhouse"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "_bundle.py"), "--here",
                           "--out", str(out)], capture_output=True, text=True,
                          timeout=INSTALL_TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    (out.parent / "bundle.log").write_text(done.stderr)
    yield out


async def run(argv: list[str], *, cwd: Path, env: dict[str, str]) -> str:
    """Run to completion within INSTALL_TIMEOUT; stdout (fails with stderr on an error)."""
    with trio.fail_after(INSTALL_TIMEOUT):
        done = await trio.run_process(argv, cwd=cwd, env=env, stdin=b"", capture_stdout=True,
                                      capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode() + done.stderr.decode()


def test_bundle_manifest_lists_every_file_with_its_hash(wheelhouse: Path) -> None:
    manifest = json.loads((wheelhouse / "manifest.json").read_text())
    names = {f["name"] for f in manifest["files"]}
    assert names == {p.name for p in wheelhouse.iterdir()} - {"manifest.json"}
    for f in manifest["files"]:
        assert hashlib.sha256((wheelhouse / f["name"]).read_bytes()).hexdigest() == f["sha256"]
    assert any(n.startswith("kith-") for n in names)
    assert any(n.startswith("setuptools-") for n in names)  # for the editable install
    assert any(n.lower().startswith("pynacl-") for n in names)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert [t["python"] for t in manifest["targets"]] == [python]


def test_the_bundle_checks_itself_and_a_missing_wheel_fails_the_check(
    wheelhouse: Path, tmp: Path
) -> None:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    log = (wheelhouse.parent / "bundle.log").read_text()
    assert f"Python {python}: kith==0.1.0 and " in log
    assert "dependencies install from the wheelhouse alone" in log
    assert check(wheelhouse).returncode == 0
    broken = tmp / "wheelhouse"
    shutil.copytree(wheelhouse, broken)
    for wheel in broken.glob("[Pp]y[Nn]a[Cc]l-*.whl"):
        wheel.unlink()
    done = check(broken)
    assert done.returncode == 1
    assert re.search(rf"Python {python}: kith==0\.1\.0 does not install from the wheelhouse "
                     r"alone: .*No matching distribution found for pynacl", done.stderr, re.I)


def check(house: Path) -> subprocess.CompletedProcess[str]:
    """``./scripts/bundle --check HOUSE`` (its Python part), with no index."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "_bundle.py"), "--check",
                           str(house)], capture_output=True, text=True, check=False,
                          timeout=INSTALL_TIMEOUT, env=kith_env(NO_INDEX))


def fake_wheel(house: Path, name: str, tag: str, *requires: str) -> None:
    """A minimal wheel ``name-1.0-TAG.whl`` (kith 0.1.0, setuptools 80.0) that pip can
    resolve."""
    version = {"kith": "0.1.0", "setuptools": "80.0"}.get(name, "1.0")
    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    wheel = f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n"
    with zipfile.ZipFile(house / f"{name}-{version}-{tag}.whl", "w") as z:
        z.writestr(f"{info}/METADATA", metadata)
        z.writestr(f"{info}/WHEEL", wheel)
        z.writestr(f"{info}/RECORD", "")


def test_the_check_resolves_each_claimed_platform_and_python_alone(tmp: Path) -> None:
    """Made-up wheels: a binary dependency built for Linux and Windows on CPython 3.12
    only, and a dependency only Windows needs (a marker pip, running on Linux, would not
    apply). Each target the manifest claims is resolved on its own."""
    house = tmp / "wheelhouse"
    house.mkdir()
    fake_wheel(house, "kith", "py3-none-any", "helper>=1", "binary",
               'winonly; sys_platform == "win32"')
    fake_wheel(house, "helper", "py3-none-any")
    fake_wheel(house, "setuptools", "py3-none-any")
    for tag in ("cp312-cp312-manylinux_2_17_x86_64", "cp312-cp312-win_amd64"):
        fake_wheel(house, "binary", tag)
    targets = [("Linux x86_64", "3.12"), ("Windows x86_64", "3.12"), ("macOS arm64", "3.12"),
               ("Linux x86_64", "3.11")]
    manifest = {"kith": "0.1.0", "targets": [{"os": o, "python": p} for o, p in targets],
                "dev": None}
    (house / "manifest.json").write_text(json.dumps(manifest))
    done = check(house)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert ("kith: checked Linux x86_64, Python 3.12: kith==0.1.0 and 2 dependencies "
            "install from the wheelhouse alone") in lines
    failed = {line.split(":")[1].strip() for line in lines if "does not install" in line}
    assert failed == {"Windows x86_64, Python 3.12", "macOS arm64, Python 3.12",
                      "Linux x86_64, Python 3.11"}
    assert any("Windows x86_64, Python 3.12" in line and "it needs winonly there" in line
               for line in lines)
    assert lines[-1] == f"kith: {house} is incomplete (3 problem(s))"
    fake_wheel(house, "winonly", "py3-none-any")
    lines = check(house).stderr.splitlines()
    assert ("kith: checked Windows x86_64, Python 3.12: kith==0.1.0 and 3 dependencies "
            "install from the wheelhouse alone") in lines


async def test_scripts_run_installs_from_the_wheelhouse_with_no_index(
    wheelhouse: Path, tmp: Path
) -> None:
    checkout = tmp / "kith"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for part in ("scripts", "node"):
        shutil.copytree(ROOT / part, checkout / part, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, checkout / name)
    env = kith_env({**NO_INDEX, "KITH_WHEELHOUSE": str(wheelhouse),
                    "KITH_PYTHON": sys.executable})
    output = await run([str(checkout / "scripts" / "run"), "--help"], cwd=checkout, env=env)
    assert "(no package index)" in output
    assert "share" in output
    assert (checkout / ".venv" / "bin" / "kith").exists()


async def test_kith_share_serves_a_pip_install_over_loopback(
    wheelhouse: Path, tmp: Path
) -> None:
    argv = kith_command(tmp / "data", "share", "--wheelhouse", str(wheelhouse),
                        "--listen", "127.0.0.1:0")
    async with running(argv, env=kith_env(), watch="stdout", ready=SERVING) as share:
        url = (await share.wait_for_line(SERVING))["url"]
        command = (await share.wait_for_line(r"^  (python3 -m venv .*)$"))[1]
        assert f"--no-index --find-links {url}" in command
        # The printed command as a user runs it, with this interpreter as python3.
        command = shlex.quote(sys.executable) + command.removeprefix("python3")
        await run(["sh", "-c", command], cwd=tmp, env=kith_env(NO_INDEX))
        output = await run([str(tmp / "kith-env" / "bin" / "kith"), "--help"], cwd=tmp,
                           env=kith_env())
        assert "share" in output
        assert b"fetched kith-" in share.rest
        share.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            assert await share.wait() == 0
        assert b"Stopped sharing." in share.rest
        assert b"Traceback" not in share.rest


def _get(port: int, path: str) -> tuple[int, bytes]:
    """One raw GET: the path goes out exactly as given (no client-side normalising)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


async def test_kith_share_serves_only_the_wheelhouse(tmp: Path) -> None:
    house = tmp / "wheelhouse"
    (house / "sub").mkdir(parents=True)
    (house / "kith-0.1.0-py3-none-any.whl").write_bytes(b"a wheel")
    (tmp / "secret.txt").write_text("secret")
    (house / "sub" / "inner.whl").write_text("secret")
    (house / ".hidden.whl").write_text("secret")
    (house / "link.whl").symlink_to(tmp / "secret.txt")
    argv = kith_command(tmp / "data", "share", "--wheelhouse", str(house),
                        "--listen", "127.0.0.1:0")
    async with running(argv, env=kith_env(), watch="stdout", ready=SERVING) as share:
        port = int((await share.wait_for_line(SERVING))["port"])
        status, body = await trio.to_thread.run_sync(_get, port, "/")
        assert status == 200
        assert b'href="kith-0.1.0-py3-none-any.whl#sha256=' in body
        assert b"secret" not in body and b"sub" not in body and b"link.whl" not in body
        status, body = await trio.to_thread.run_sync(_get, port,
                                                     "/kith-0.1.0-py3-none-any.whl")
        assert (status, body) == (200, b"a wheel")
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt",
                     "/sub/inner.whl", "/sub/", "/sub", "/.hidden.whl", "/link.whl",
                     str(tmp / "secret.txt"), "//" + str(tmp / "secret.txt"),
                     "/../../../../etc/passwd", "/%2fetc%2fpasswd"):
            status, body = await trio.to_thread.run_sync(_get, port, path)
            assert status == 404, path
            assert b"secret" not in body and b"root:" not in body, path


@pytest.mark.parametrize("how", ["option", "environment"])
async def test_share_without_a_wheelhouse_says_to_bundle(tmp: Path, how: str) -> None:
    missing = str(tmp / "no-such-wheelhouse")
    if how == "option":
        result = await kith_cli(tmp / "data", "share", "--wheelhouse", missing)
    else:
        result = await kith_cli(tmp / "data", "share", env={"KITH_WHEELHOUSE": missing})
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"kith: no wheelhouse at {missing}: run ./scripts/bundle first (or pass --wheelhouse DIR)"]
