"""E2B rows of `sprout bench`, measured through the stock SDK. Prints a JSON
list of seconds, one per run. Environment: E2B_API_URL, E2B_SANDBOX_URL,
E2B_API_KEY (set by `sprout bench`)."""
import json
import sys
import time

from e2b import Sandbox

mode, runs, template = sys.argv[1], int(sys.argv[2]), sys.argv[3]
samples = []
if mode == "create":
    # Sandbox.create() until the first command has answered.
    for i in range(runs + 2):
        t = time.perf_counter()
        sbx = Sandbox.create(template=template, timeout=120)
        sbx.commands.run("true")
        elapsed = time.perf_counter() - t
        sbx.kill()
        if i >= 2:  # the first two warm the SDK's connections
            samples.append(elapsed)
elif mode == "run":
    sbx = Sandbox.create(template=template, timeout=600)
    try:
        for i in range(runs + 20):
            t = time.perf_counter()
            sbx.commands.run("true")
            if i >= 20:
                samples.append(time.perf_counter() - t)
    finally:
        sbx.kill()
else:
    raise SystemExit(f"unknown mode {mode}")
print(json.dumps(samples))
