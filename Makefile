# Sprout: `make run` starts a server on its embedded defaults, `make test` runs every test.
SWIFT ?= swift
CC ?= cc
AGENT_SCRATCH := .build-agent
# SwiftPM leaves a few TemporaryDirectory.* folders in $TMPDIR on every run;
# they go in the build folder instead of piling up in /tmp.
export TMPDIR := $(CURDIR)/.build/tmp
$(shell mkdir -p $(TMPDIR))

.PHONY: deps test-deps build agent dashboard proto run test bench-agent clean

deps:
	./scripts/install-deps.sh

test-deps:
	./scripts/install-deps.sh --test

# The agent is linked fully static so it runs in any root filesystem,
# including a busybox-only one with no libc of its own.
agent:
	$(SWIFT) build -c release --product sprout-agent -Xswiftc -static-executable --scratch-path $(AGENT_SCRATCH)

# xterm.js for the dashboard's terminal: Debian's CommonJS modules bundled
# for the browser by esbuild (Debian's), with xterm's stylesheet beside it.
dashboard: dashboard/vendor/xterm.js dashboard/vendor/xterm.css

dashboard/vendor/xterm.js: scripts/xterm-entry.js
	@mkdir -p dashboard/vendor
	esbuild scripts/xterm-entry.js --bundle --format=iife --log-level=warning --legal-comments=inline --outfile=$@

dashboard/vendor/xterm.css:
	@mkdir -p dashboard/vendor
	cp /usr/share/nodejs/xterm/lib/xterm.css $@

# envd's message types from proto/envd/*.proto, for after a change there:
# Debian's protoc and swift-protobuf's plugin, built from the checkout
# SwiftPM resolved. The output is committed; builds do not run this.
PROTOC_GEN_SWIFT := .build/protoc-gen-swift/release/protoc-gen-swift
proto:
	command -v protoc >/dev/null || apt-get install -y protobuf-compiler
	$(SWIFT) package resolve
	$(SWIFT) build -c release --package-path .build/checkouts/swift-protobuf --product protoc-gen-swift --scratch-path .build/protoc-gen-swift
	protoc --plugin=protoc-gen-swift=$(PROTOC_GEN_SWIFT) --swift_opt=Visibility=Public \
		--swift_out=Sources/EnvdProto -I proto/envd proto/envd/process.proto proto/envd/filesystem.proto

build: agent dashboard
	$(SWIFT) build -c release

run: deps build
	.build/release/sprout server

test: test-deps agent dashboard
	$(SWIFT) build --build-tests
	$(SWIFT) test

bench-agent: agent
	$(SWIFT) build -c release --product sprout-agent-bench
	.build/release/sprout-agent-bench --agent $(AGENT_SCRATCH)/release/sprout-agent

clean:
	rm -rf .build $(AGENT_SCRATCH) dashboard/vendor
