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

Self-check (``check``, run before the swap, and alone with ``--check DIR``): for every
target the manifest claims, pip resolves Kith and all its dependencies from the
wheelhouse alone (``install --dry-run --no-index --find-links DIR --only-binary=:all:``
with the target's ``--platform``/``--python-version``/``--abi``), exactly as a machine of
that kind would with no internet. pip evaluates environment markers for the machine it
runs on (only the Python version is the target's), so the check also walks the resolved
set with each target's own markers (``sys_platform``, ``os_name``, ``platform_machine``,
...) and resolves, the same way, any dependency that only that target needs.
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
#: Environment markers of each target (pip evaluates markers for the machine it runs on).
MARKERS: dict[str, dict[str, str]] = {
    "Linux x86_64": {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                     "platform_machine": "x86_64"},
    "Linux aarch64": {"sys_platform": "linux", "platform_system": "Linux",
                      "os_name": "posix", "platform_machine": "aarch64"},
    "macOS x86_64": {"sys_platform": "darwin", "platform_system": "Darwin",
                     "os_name": "posix", "platform_machine": "x86_64"},
    "macOS arm64": {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix",
                    "platform_machine": "arm64"},
    "Windows x86_64": {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt",
                       "platform_machine": "AMD64"},
}


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


def resolve(house: Path, requirement: str, platform_args: list[str]
            ) -> tuple[list[dict[str, Any]], str]:
    """What pip would install for REQUIREMENT from HOUSE alone (``--report`` entries), or
    ([], pip's error) if it cannot."""
    with tempfile.TemporaryDirectory() as target:
        done = pip("install", "--dry-run", "--ignore-installed", "--no-index",
                   "--find-links", str(house), "--only-binary=:all:", "--target", target,
                   "--report", "-", *platform_args, requirement)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        return [], " ".join(lines) or done.stderr.strip()
    return json.loads(done.stdout)["install"], ""


def _markers() -> Any:
    try:
        from packaging import requirements  # (pytest brings it; else pip's copy)
    except ImportError:
        from pip._vendor.packaging import requirements  # type: ignore[no-redef]
    return requirements


def missing_for(label: str, python: str, installed: list[dict[str, Any]]) -> list[str]:
    """Requirements of the resolved set that TARGET's own markers need but pip (running
    here) left out."""
    requirements = _markers()
    env = {**MARKERS[label], "python_version": python, "python_full_version": f"{python}.0",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    names = {_canonical(item["metadata"]["name"]) for item in installed}
    missing = []
    for item in installed:
        for text in item["metadata"].get("requires_dist") or []:
            req = requirements.Requirement(text)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            if _canonical(req.name) not in names:
                missing.append(f"{req.name}{req.specifier}")
    return sorted(set(missing))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check(house: Path, manifest: dict[str, Any]) -> list[str]:
    """Resolve Kith for every target of MANIFEST from HOUSE alone; the problems found."""
    problems = []
    kith = f"kith=={manifest['kith']}"
    checks: list[tuple[str, str, str, list[str]]] = []
    for target in manifest["targets"]:
        label, python = target["os"], target["python"]
        args = target_args(TARGETS[label], python) if label in TARGETS else []
        checks.append((f"{label}, Python {python}", kith, label, args))
    if manifest.get("dev"):
        checks.append(("the dev extras", f"kith[dev]=={manifest['kith']}", "", []))
    checks.append(("the build backend", "setuptools>=77", "", []))
    for name, requirement, label, args in checks:
        installed, error = resolve(house, requirement, args)
        python = args[args.index("--python-version") + 1] if args else ""
        tried: set[str] = set()
        while not error and label in MARKERS:  # what only that target needs, until none
            extra = [r for r in missing_for(label, python, installed) if r not in tried]
            if not extra:
                break
            tried.update(extra)
            for only_there in extra:
                more, error = resolve(house, only_there, args)
                if error:
                    error = f"it needs {only_there} there: {error}"
                    break
                installed += more
        if error:
            problems.append(f"{name}: {requirement} does not install from the wheelhouse "
                            f"alone: {error}")
        else:
            print(f"kith: checked {name}: {requirement} and {len(installed) - 1} "
                  "dependencies install from the wheelhouse alone", file=sys.stderr)
    return problems


def check_command(house: Path) -> int:
    """``./scripts/bundle --check DIR``: check an existing wheelhouse; the exit status."""
    try:
        manifest = json.loads((house / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"kith: cannot read {house / 'manifest.json'}: {exc}", file=sys.stderr)
        return 1
    problems = check(house, manifest)
    for problem in problems:
        print(f"kith: {problem}", file=sys.stderr)
    if problems:
        print(f"kith: {house} is incomplete ({len(problems)} problem(s))", file=sys.stderr)
        return 1
    print(f"kith: {house} is complete for its {len(manifest['targets'])} target(s)",
          file=sys.stderr)
    return 0


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
    parser.add_argument("--check", metavar="DIR", type=Path, nargs="?",
                        const=ROOT / "dist" / "wheelhouse",
                        help="only check that an existing wheelhouse (default dist/wheelhouse) "
                        "installs Kith for each target in its manifest, with no index")
    args = parser.parse_args()
    if args.check is not None:
        return check_command(args.check.resolve())
    out: Path = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wheelhouse-", dir=out.parent))
    try:
        manifest = build(staging, here=args.here, dev=args.dev)
        problems = check(staging, manifest)
        if problems:
            raise BundleError("the wheelhouse is incomplete:\n" + "\n".join(problems))
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
