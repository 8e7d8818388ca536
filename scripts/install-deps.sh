#!/usr/bin/env bash
# Installs the host packages Sprout needs. Idempotent: installs only what is missing.
set -euo pipefail

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
)

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
