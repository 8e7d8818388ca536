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
  util-linux       # nsenter, mount, loop devices
  e2fsprogs        # mkfs.ext4: each volume is an ext4 file system of its size
  coreutils
  tar              # image layers and archives (OCI and docker save)
  zstd             # image layers compressed with zstd
  isal             # igzip: gzip layers decompressed about 2.4x as fast as zlib does
  pigz             # unpigz: the fallback, about twice gzip's speed
  libc6-dev
  zlib1g-dev       # zlib for compress-nio: gzip for E2B's files, compressed memory image chunks
  node-xterm       # xterm.js 3.8 as CommonJS modules: the dashboard's terminal
  libjs-xterm      # its fit add-on (its own xterm.js is an empty shell in Debian 12)
  esbuild          # bundles them for the browser at build time (make dashboard)
)
if $tests; then
  packages+=(
    chromium         # the dashboard's tests: a real headless browser
    chromium-driver  # driven over WebDriver (Selenium)
    fonts-dejavu-core
    docker-registry  # the image tests pull from a real registry (CNCF distribution)
    skopeo           # ... after pushing into it an image the test made
    apache2-utils    # htpasswd: the registry's basic-auth logins
    openssl          # signs the test token service's JWTs (Docker Hub's bearer-token scheme)
    swift-proxy      # a real S3 server for the object store's tests: OpenStack Swift's s3api,
    swift-object     # ... with one object, container and account server
    swift-container
    swift-account
    postgresql       # the fleet's catalog tests: a real PostgreSQL (initdb'd by each test)
  )
fi

# gVisor comes from Debian 13 (trixie): its runsc (20240729) is one static
# binary with no dependencies, and has what Sprout relies on (the systrap
# platform, /proc/sys/kernel/random/boot_id, statx with AT_NO_AUTOMOUNT,
# uncompressed checkpoints that deduplicate). Debian 12 stays the base
# system: the trixie source is pinned so that only runsc comes from it.
RUNSC_MIN=20240729
trixie_source=/etc/apt/sources.list.d/sprout-trixie.sources
trixie_pin=/etc/apt/preferences.d/sprout-trixie
# Empty when runsc is not installed (dpkg-query then fails: not an error here).
runsc_version() { { dpkg-query -W -f='${Version}' runsc 2>/dev/null || true; } | sed -n 's/^0\.0~\([0-9]\{8\}\).*/\1/p'; }

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
have_runsc=$(runsc_version)
if [ -z "$have_runsc" ] || [ "$have_runsc" -lt "$RUNSC_MIN" ]; then
  [[ " ${missing[*]} " == *" runsc "* ]] || missing+=(runsc)
  if [ "$(id -u)" -eq 0 ] && [ ! -f "$trixie_source" ]; then
    cat > "$trixie_source" <<'SOURCE'
# Added by Sprout's install-deps.sh: runsc (gVisor) 20240729 or newer. Pinned
# in /etc/apt/preferences.d/sprout-trixie so that nothing else comes from here.
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCE
    cat > "$trixie_pin" <<'PIN'
# Added by Sprout's install-deps.sh: from trixie, runsc only.
Package: *
Pin: release n=trixie
Pin-Priority: 1

Package: runsc
Pin: release n=trixie
Pin-Priority: 990
PIN
  fi
fi

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
have_runsc=$(runsc_version)
if [ -z "$have_runsc" ] || [ "$have_runsc" -lt "$RUNSC_MIN" ]; then
  echo "install-deps: runsc ${have_runsc:-missing} is older than $RUNSC_MIN (Debian 13's); see $trixie_source" >&2
  exit 1
fi

command -v swift >/dev/null || { echo "install-deps: swift is not on PATH" >&2; exit 1; }

$tests || exit 0

# Debian's docker-registry package starts a registry on :5000 where systemd
# runs; the tests start their own on free loopback ports, so it stays off.
if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
# The same for OpenStack Swift's servers and PostgreSQL (the tests run their own).
if [[ " ${missing[*]} " == *" swift-proxy "* ]] && command -v systemctl >/dev/null; then
  systemctl disable --now swift-proxy swift-object swift-container swift-account >/dev/null 2>&1 || true
fi
if [[ " ${missing[*]} " == *" postgresql "* ]] && command -v systemctl >/dev/null; then
  systemctl disable --now postgresql >/dev/null 2>&1 || true
fi

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
