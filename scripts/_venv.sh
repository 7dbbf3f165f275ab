# Shared by scripts/run and scripts/test: make sure .venv exists and matches pyproject.toml.
# Usage: ensure_venv ROOT EXTRAS   (EXTRAS "", "plots" or "dev"; dev includes plots)
# With a wheelhouse ($KITH_WHEELHOUSE, else dist/wheelhouse from ./scripts/bundle) everything
# is installed from it and no package index is touched. Extras it lacks (./scripts/bundle
# without --dev) come from the index, with a message saying so.

find_python() {
    local candidate
    for candidate in "${KITH_PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "kith: Python 3.11 or newer is required (set KITH_PYTHON to its path)" >&2
    return 1
}

ensure_venv() {
    local root="$1" extras="$2" venv="$1/.venv" want stamp python spec
    want="$(cat "$root/pyproject.toml" | sha256sum | cut -c1-16)"
    stamp="$venv/.kith-installed"
    # A dev install also satisfies a plain run and the plots; a plots install a plain run.
    if [ -f "$stamp" ] && grep -qx "$want dev" "$stamp"; then return 0; fi
    if [ -f "$stamp" ] && grep -qx "$want $extras" "$stamp"; then return 0; fi
    if [ -f "$stamp" ] && [ -z "$extras" ] && grep -qx "$want plots" "$stamp"; then return 0; fi
    if [ ! -x "$venv/bin/python" ]; then
        python="$(find_python)"
        echo "kith: creating $venv with $("$python" --version)" >&2
        "$python" -m venv "$venv"
    fi
    spec="$root"
    [ -n "$extras" ] && spec="$root[$extras]"
    local pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
    local wheelhouse="${KITH_WHEELHOUSE:-$root/dist/wheelhouse}"
    if compgen -G "$wheelhouse/kith-*.whl" >/dev/null; then
        echo "kith: installing kith${extras:+[$extras]} into $venv from $wheelhouse" \
            "(no package index)" >&2
        if ! "${pip[@]}" --no-index --find-links "$wheelhouse" -e "$spec" >&2; then
            if [ -z "$extras" ]; then
                echo "kith: cannot install from $wheelhouse: was it built for this platform" \
                    "and Python ($("$venv/bin/python" --version))? ./scripts/bundle builds it" >&2
                return 1
            fi
            echo "kith: $wheelhouse lacks the $extras extras for this machine (./scripts/bundle" \
                "--dev adds them); installing them from the package index" >&2
            "${pip[@]}" --find-links "$wheelhouse" -e "$spec" >&2
        fi
    elif [ -n "${KITH_WHEELHOUSE:-}" ]; then
        echo "kith: KITH_WHEELHOUSE=$KITH_WHEELHOUSE holds no Kith wheel (./scripts/bundle" \
            "--out DIR builds one)" >&2
        return 1
    else
        echo "kith: installing kith${extras:+[$extras]} and its dependencies into $venv" >&2
        "${pip[@]}" --upgrade pip >&2 || true
        "${pip[@]}" -e "$spec" >&2
    fi
    echo "$want $extras" > "$stamp"
}
