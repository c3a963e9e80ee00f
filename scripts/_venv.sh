# Shared by scripts/run, scripts/test, scripts/bench: create or update .venv.
# ensure_venv EXTRAS  -- EXTRAS is "" or e.g. "test"
ensure_venv() {
    local extras="$1" root py stamp want
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    py="${PYTHON:-python3}"
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "supervisord-claude needs Python 3.11 or newer ($py is $("$py" --version 2>&1))" >&2
        return 1
    fi
    if [ ! -x "$root/.venv/bin/python" ]; then
        "$py" -m venv "$root/.venv"
        "$root/.venv/bin/python" -m pip install -q --upgrade pip
    fi
    want="$(cat "$root/pyproject.toml" | sha256sum | cut -c1-16)-${extras:-base}"
    stamp="$root/.venv/.installed-${extras:-base}"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        local spec="$root"
        [ -n "$extras" ] && spec="$root[$extras]"
        "$root/.venv/bin/python" -m pip install -q -e "$spec"
        echo "$want" > "$stamp"
    fi
    VENV="$root/.venv"
    export PATH="$VENV/bin:$PATH"
}
