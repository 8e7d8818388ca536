"""The code.first_result row of `sprout bench`, through the stock
e2b-code-interpreter SDK: Sandbox.create() until run_code("1+1") has
answered "2". Prints a JSON list of seconds, one per run.

    code-bench.py warm RUNS TEMPLATE   the env's memory image has the kernel running
    code-bench.py cold RUNS TEMPLATE   the same files, booted: the interpreter is started
                                       after create, as `start` would (python3 server.py)
    code-bench.py pool RUNS TEMPLATE   warm, from the server's warm pool (given 2 s to
                                       refill between creates)

warm and cold ask for sandboxes of their own (`Sprout-Pool: no`), so that
they measure a start from the memory image or a boot, not the pool.

Environment: E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY (set by `sprout bench`)."""
import json
import sys
import time

from e2b_code_interpreter import Sandbox

mode, runs, template = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode not in ("warm", "cold", "pool"):
    raise SystemExit(f"unknown mode {mode}")
headers = {} if mode == "pool" else {"Sprout-Pool": "no"}
samples = []
for i in range(runs + 2):
    if mode == "pool":
        time.sleep(2)
    t = time.perf_counter()
    sbx = Sandbox.create(template=template, timeout=120, api_headers=headers)
    try:
        if mode == "cold":
            sbx.commands.run("python3 /code/interpreter/server.py", background=True, user="root")
        deadline = time.monotonic() + 120
        while True:
            try:
                result = sbx.run_code("1+1")
                break
            except Exception:
                # Cold: nothing listens on 49999 until the kernel is up.
                if mode == "warm" or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        elapsed = time.perf_counter() - t
        if result.text != "2":
            raise SystemExit(f"run_code('1+1') answered {result!r}")
    finally:
        sbx.kill()
    if i >= 2:  # the first two warm the SDK's connections and the image cache
        samples.append(elapsed)
print(json.dumps(samples))
