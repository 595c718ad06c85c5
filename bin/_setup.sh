# shellcheck shell=bash
# Shared by bin/run and bin/test (sourced, not run): Debian packages, the virtualenv, pip requirements.
# The caller has `set -euo pipefail` and is in the repository root.

PYTHON=${PYTHON:-python3}
VENV=.venv

# Debian packages the running service needs (bin/run installs them; bin/test too, since the tests run the service's code).
# libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0: WeasyPrint (invoice PDFs); fonts-dejavu-core: a font for them.
RUNTIME_DEBIAN_PACKAGES=(libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_debian_packages PACKAGE...: install what `dpkg -s` does not report installed; no apt at all otherwise.
ensure_debian_packages() {
    local missing=() package
    [ $# -gt 0 ] || return 0
    if ! command -v dpkg >/dev/null; then
        say "not a Debian system: make sure these are installed: $*"
        return 0
    fi
    for package in "$@"; do
        dpkg -s "$package" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$package")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Package lists may be missing or stale on a fresh machine: refresh them only when the install needs it.
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || { as_root apt-get update -q && as_root apt-get install -y -q --no-install-recommends "${missing[@]}"; }
}

# ensure_venv: create .venv when missing (installing python3-venv only if `python3 -m venv` cannot).
ensure_venv() {
    [ -x "$VENV/bin/python" ] && return 0
    command -v "$PYTHON" >/dev/null || ensure_debian_packages python3 python3-venv
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "medarchive needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1) (set PYTHON=/path/to/python3.11)"
    say "creating $VENV with $("$PYTHON" --version 2>&1)"
    if ! "$PYTHON" -m venv --clear "$VENV" >/dev/null 2>&1; then
        ensure_debian_packages python3-venv
        "$PYTHON" -m venv --clear "$VENV"
    fi
    rm -f var/.requirements*.sha256  # a new virtualenv has none of them
}

# ensure_requirements STAMP FILE [FILE...]: pip install -r FILE unless STAMP holds the hash of all the FILEs
# (list every file FILE includes with -r, so a change to any of them reinstalls).
ensure_requirements() {
    local stamp=$1 requirements=$2 hash
    shift
    # pyproject.toml too: it declares the processing plugins' entry points, installed below with the requirements.
    hash=$(cat "$@" pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
        return 0
    fi
    say "installing $requirements into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    # Our own metadata (entry points of the built-in processing types), editable: no code is copied.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
    mkdir -p "$(dirname "$stamp")"
    printf '%s\n' "$hash" > "$stamp"
}
