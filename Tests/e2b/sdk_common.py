"""What every SDK check module shares."""
import os
import time
import uuid

TEMPLATE = os.environ.get("E2B_TEST_TEMPLATE", "debian")
RUN = uuid.uuid4().hex[:8]


def eventually(condition, seconds=60, every=0.2):
    """Asks `condition` again until it holds or `seconds` (a bound far above
    what the wait takes, so a busy machine is slower, never failing) pass;
    returns its last answer. Checks wait on states, never on a length of time."""
    deadline = time.monotonic() + seconds
    while True:
        answer = condition()
        if answer or time.monotonic() >= deadline:
            return answer
        time.sleep(every)


def check(name, condition, detail=""):
    if not condition:
        raise AssertionError(f"{name}: {detail}")
    print("ok", name, flush=True)
