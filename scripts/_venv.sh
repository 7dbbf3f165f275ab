# Shared by scripts/run and scripts/test: make sure .venv exists and matches pyproject.toml.
# Usage: ensure_venv ROOT EXTRAS   (EXTRAS "", "plots" or "dev"; dev includes plots)

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
    echo "kith: installing ${spec#"$root"} dependencies into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2 || true
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec" >&2
    echo "$want $extras" > "$stamp"
}
