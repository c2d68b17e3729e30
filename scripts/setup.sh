# Sourced by demo.sh and test.sh: make .venv with sqlifier installed from this checkout.
# Needs only Python 3.11+ (and, on Debian/Ubuntu, its venv module: installed when missing
# and running as root, otherwise the message says which package to install).

find_python() {
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "sqlifier needs Python 3.11 or newer (found: $(python3 --version 2>&1))" >&2
    return 1
}

ensure_venv_module() {
    if "$1" -c 'import ensurepip, venv' 2>/dev/null; then
        return 0
    fi
    version=$("$1" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing python${version}-venv (Python's venv module)..." >&2
        apt-get update -qq && apt-get install -y -qq "python${version}-venv" >/dev/null
    else
        echo "Python's venv module is missing: sudo apt-get install python${version}-venv" >&2
        return 1
    fi
}

# What each script installs into .venv beside sqlifier: the tests need the development
# tools and both optional secret providers ([vault], [aws]) they test against real
# servers; the demo needs no development tool, only the example shop's own dependency
# (its payment ledger migrates with Alembic).
DEV_EXTRAS='.[dev,vault,aws]'
DEMO_PACKAGES='alembic==1.20.1'

# setup_venv [dev|demo] (default dev). A .venv set up for dev also serves the demo.
setup_venv() {
    local python stamp wanted mode=${1:-dev}
    python=$(find_python) || return 1
    wanted="$(cat pyproject.toml; "$python" --version 2>&1)"
    stamp=.venv/.sqlifier-installed
    if [ -x .venv/bin/python ] && [ -f "$stamp" ]; then
        if [ "$(cat "$stamp")" = "dev:$wanted" ] ||
            { [ "$mode" = demo ] && [ "$(cat "$stamp")" = "demo:$wanted" ]; }; then
            return 0
        fi
    fi
    ensure_venv_module "$python" || return 1
    echo "setting up .venv for the $mode (first run only)..." >&2
    "$python" -m venv .venv || return 1
    .venv/bin/python -m pip install --quiet --upgrade pip || return 1
    if [ "$mode" = demo ]; then
        .venv/bin/python -m pip install --quiet -e . "$DEMO_PACKAGES" || return 1
    else
        .venv/bin/python -m pip install --quiet -e "$DEV_EXTRAS" || return 1
    fi
    printf '%s' "$mode:$wanted" >"$stamp"
}
