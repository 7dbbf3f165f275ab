"""Build the offline wheelhouse (run through ./scripts/bundle, which picks the Python).

Theory of operation: a classroom LAN often has no internet, so everything a machine
needs to install Kith must already sit in one directory of wheels. We build Kith's own
wheel, then ask pip, once per target (operating system and CPU x Python version), to
download every runtime dependency as a binary wheel for that target into the same
directory; pip resolves the environment markers of each target itself. A dependency that
publishes no wheel at all is built here from its sdist, and kept only if the result is pure
Python (``py3-none-any``), so that no target ever has to compile anything or fetch a build
backend. setuptools (Kith's build backend) is included too, so that ``./scripts/run`` can
make its editable install from the wheelhouse. The new wheelhouse is assembled beside the
old one and swapped in at the end, so ``kith share`` never serves a half-built one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ("3.11", "3.12", "3.13")
# Oldest glibc we accept wheels for is 2.17 (manylinux2014); newest 2.28 (Debian 10,
# Ubuntu 18.10, RHEL 8): a wheel that needs a newer glibc would not install everywhere.
_GLIBC = range(28, 16, -1)
TARGETS: dict[str, list[str]] = {
    "Linux x86_64": [*(f"manylinux_2_{m}_x86_64" for m in _GLIBC), "manylinux2014_x86_64"],
    "Linux aarch64": [*(f"manylinux_2_{m}_aarch64" for m in _GLIBC), "manylinux2014_aarch64"],
    # pip widens a macOS tag to every older release and to universal2 wheels.
    "macOS x86_64": ["macosx_12_0_x86_64"],
    "macOS arm64": ["macosx_12_0_arm64"],
    "Windows x86_64": ["win_amd64"],
}
_MISSING = re.compile(r"No matching distribution found for (\S+)")


class BundleError(Exception):
    pass


def pip(*args: str, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check"]
    if quiet:
        cmd.append("--quiet")
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def download(out: Path, requirement: str, label: str, platform_args: list[str]) -> None:
    """``pip download`` binary wheels of REQUIREMENT and its dependencies for one target.

    A dependency without any wheel is built here from its sdist, if pure Python, and the
    download is retried with it on the find-links path.
    """
    built: set[str] = set()
    while True:
        done = pip("download", "--only-binary=:all:", "--find-links", str(out),
                   "--dest", str(out), *platform_args, requirement)
        if done.returncode == 0:
            return
        missing = _MISSING.search(done.stderr)
        if missing is None or missing.group(1) in built:
            raise BundleError(f"pip download failed for {label}:\n{done.stderr.strip()}")
        spec = missing.group(1)
        built.add(spec)
        print(f"  {spec} has no wheel for {label}: building it from its sdist", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            made = pip("wheel", "--no-deps", "--no-binary=:all:", "--wheel-dir", tmp, spec)
            wheels = list(Path(tmp).glob("*.whl"))
            if made.returncode != 0 or len(wheels) != 1:
                raise BundleError(f"could not build {spec} from its sdist:\n{made.stderr}")
            if not wheels[0].name.endswith("-none-any.whl"):
                raise BundleError(f"{spec} has no wheel for {label} and is not pure Python "
                                  f"(built {wheels[0].name}); {label} cannot be bundled")
            shutil.copy2(wheels[0], out / wheels[0].name)


def target_args(platforms: list[str], python: str) -> list[str]:
    abi = "cp" + python.replace(".", "")
    args = ["--python-version", python, "--implementation", "cp",
            "--abi", abi, "--abi", "abi3", "--abi", "none"]
    for tag in platforms:
        args += ["--platform", tag]
    return args


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def build(out: Path, *, here: bool, dev: bool) -> dict[str, Any]:
    print(f"kith: building Kith's wheel from {ROOT}", file=sys.stderr)
    made = pip("wheel", "--no-deps", "--wheel-dir", str(out), str(ROOT))
    wheels = list(out.glob("kith-*.whl"))
    if made.returncode != 0 or len(wheels) != 1:
        raise BundleError(f"building Kith's wheel failed:\n{made.stderr.strip()}")
    kith = wheels[0]
    version = kith.name.split("-")[1]
    this_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    this_platform = sysconfig.get_platform()
    # The build backend, for `pip install -e .` (./scripts/run) with no index.
    download(out, "setuptools>=77", "the build backend", [])
    targets: list[dict[str, str]] = []
    if here:
        print(f"kith: dependencies for this machine ({this_platform}, Python {this_python})",
              file=sys.stderr)
        download(out, str(kith), "this machine", [])
        targets.append({"os": this_platform, "python": this_python})
    else:
        for label, platforms in TARGETS.items():
            for python in PYTHONS:
                print(f"kith: dependencies for {label}, Python {python}", file=sys.stderr)
                download(out, str(kith), f"{label} Python {python}",
                         target_args(platforms, python))
                targets.append({"os": label, "python": python})
    if dev:
        print(f"kith: dev extras for this machine ({this_platform}, Python {this_python})",
              file=sys.stderr)
        download(out, f"{kith}[dev]", "the dev extras", [])
    files = sorted(p for p in out.iterdir() if p.is_file())
    return {
        "kith": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "targets": targets,
        "dev": {"os": this_platform, "python": this_python} if dev else None,
        "files": [{"name": p.name, "size": p.stat().st_size, "sha256": sha256(p)}
                  for p in files],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bundle",
        description="Build dist/wheelhouse/: Kith and every runtime dependency as wheels for "
        "Linux (x86_64, aarch64), macOS (x86_64, arm64) and Windows (x86_64), Python "
        "3.11-3.13, plus manifest.json. ./scripts/run, ./scripts/test and `kith share` use it "
        "with no package index. Needs the internet (PyPI) once, here.")
    parser.add_argument("--dev", action="store_true",
                        help="also the dev extras (pytest, ruff, mypy, hypothesis, matplotlib) "
                        "for this machine and Python, so ./scripts/test runs offline")
    parser.add_argument("--here", action="store_true",
                        help="only this machine's platform and Python (fast)")
    parser.add_argument("--out", metavar="DIR", type=Path, default=ROOT / "dist" / "wheelhouse",
                        help="where to put it (default dist/wheelhouse)")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wheelhouse-", dir=out.parent))
    try:
        manifest = build(staging, here=args.here, dev=args.dev)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        staging.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BundleError as exc:
        print(f"kith: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = manifest["files"]
    size = sum(f["size"] for f in files)
    print(f"kith: {out}: {len(files)} wheels and manifest.json, {size / 1e6:.1f} MB "
          f"(Kith {manifest['kith']}, {len(manifest['targets'])} target(s)"
          f"{', dev extras' if args.dev else ''})", file=sys.stderr)
    where = "" if out.resolve() == (ROOT / "dist" / "wheelhouse").resolve() else \
        f" --wheelhouse {out}"
    print(f"kith: share it on this LAN with `./scripts/run share{where}`", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
