#!/usr/bin/env bash
# Installs the host packages Sprout needs. Idempotent: installs only what is missing.
#   install-deps.sh          what `sprout server` needs (make run)
#   install-deps.sh --test   and what the tests drive it with (make test)
set -euo pipefail
tests=false
[ "${1:-}" = "--test" ] && tests=true

packages=(
  runsc            # gVisor, the default runtime
  runc             # the fast, weaker runtime
  busybox-static   # the root of the built-in `empty` env
  debootstrap      # builds the built-in `debian` env
  nftables         # per-server firewall tables: NAT, isolation, egress sets
  iptables         # only to remove rules older Sprout versions left
  iproute2         # network namespaces and veth pairs
  util-linux       # nsenter, mount
  coreutils
  gcc              # builds the small statx compatibility shim for gVisor sandboxes
  libc6-dev
  zlib1g-dev       # zlib, to open gVisor's compressed memory images for deduplication
  node-xterm       # xterm.js 3.8 as CommonJS modules: the dashboard's terminal, bundled and served by Sprout
  libjs-xterm      # its fit add-on and stylesheet (its own xterm.js is an empty shell in Debian 12)
)
if $tests; then
  packages+=(
    chromium         # the dashboard's tests: a real headless browser
    chromium-driver  # driven over WebDriver (Selenium)
    fonts-dejavu-core
  )
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v swift >/dev/null || { echo "install-deps: swift is not on PATH" >&2; exit 1; }

$tests || exit 0

# Python tools for the API contract test and the fuzzing (schemathesis).
if ! python3 -c "import openapi_spec_validator, openapi_schema_validator, yaml, requests, schemathesis" 2>/dev/null; then
  command -v pip3 >/dev/null || { apt-get install -y -qq python3-pip >/dev/null; }
  pip3 install -q openapi-spec-validator openapi-schema-validator pyyaml requests schemathesis 2>/dev/null \
    || pip3 install -q --break-system-packages openapi-spec-validator openapi-schema-validator pyyaml requests schemathesis
fi

# The stock E2B SDK, pinned, in a venv of its own (its dependencies stay apart
# from the tools above): the E2B-compatibility tests drive the server with it.
# With it, the code interpreter SDK (e2b-code-interpreter), for the code
# interpreter's tests and `sprout bench`'s code.first_result.
E2B_VERSION=2.63.0
E2B_CI_VERSION=2.11.5
venv="$(cd "$(dirname "$0")/.." && pwd)/.venv-e2b"
if ! "$venv/bin/python" -c "import e2b, e2b_code_interpreter, sys; from importlib.metadata import version; sys.exit(version('e2b') != '$E2B_VERSION' or version('e2b-code-interpreter') != '$E2B_CI_VERSION')" 2>/dev/null; then
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" 2>/dev/null || { apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q "e2b==$E2B_VERSION" "e2b-code-interpreter==$E2B_CI_VERSION"
fi

# The dashboard's browser tests: Selenium, and axe-core (the accessibility
# rules) as the one file axe-playwright-python ships: the test injects that
# file into the page itself, so playwright (its dependency) is not installed.
SELENIUM_VERSION=4.38.0  # 4.52 wants a certifi newer than the PyPI mirror has
AXE_PY_VERSION=0.1.8
if ! "$venv/bin/python" -c "import selenium, sys; from importlib.metadata import version; sys.exit(version('selenium') != '$SELENIUM_VERSION' or version('axe-playwright-python') != '$AXE_PY_VERSION')" 2>/dev/null; then
  "$venv/bin/pip" install -q "selenium==$SELENIUM_VERSION"
  "$venv/bin/pip" install -q --no-deps "axe-playwright-python==$AXE_PY_VERSION"
fi
