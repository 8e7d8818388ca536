"""Drives a real Sprout server with the stock `e2b-code-interpreter` SDK
(pinned in scripts/install-deps.sh), against the built-in env
`code-interpreter-v1` (the SDK's default template, which a fresh server
builds in the background from its start). Environment: E2B_API_URL, E2B_SANDBOX_URL, E2B_VOLUME_API_URL, E2B_API_KEY. Prints
one line per check; any failure raises and exits non-zero."""
import base64
import os
import time

import httpx
from e2b import InvalidArgumentException, NotFoundException, TimeoutException, Volume
from e2b_code_interpreter import Sandbox

from sdk_common import eventually

URL = os.environ["E2B_SANDBOX_URL"]
API = os.environ["E2B_API_URL"]
KEY = {"X-API-Key": os.environ["E2B_API_KEY"]}


def check(name, condition, detail=""):
    if not condition:
        raise AssertionError(f"{name}: {detail}")
    print("ok", name, flush=True)


def raw(sbx, method, path, body=None, content=None):
    """A request to the interpreter as the SDK makes them, for what the SDK itself refuses to send."""
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49999", "X-Access-Token": sbx._envd_access_token,
               "Content-Type": "application/json"}
    return httpx.request(method, URL + path, headers=headers, json=body, content=content, timeout=60)


def state_and_streams(sbx):
    sbx.run_code("x = 41")
    r = sbx.run_code("x + 1")
    check("state is kept across calls", r.text == "42", repr(r))
    check("the execution count counts calls", r.execution_count is not None and r.execution_count >= 2, repr(r.execution_count))
    seen = []
    r = sbx.run_code("import sys, time\nprint('one', flush=True)\ntime.sleep(1)\nprint('two', flush=True)\nprint('oops', file=sys.stderr)",
                     on_stdout=lambda m: seen.append((m.line, m.timestamp)))
    check("stdout and stderr are apart", r.logs.stdout == ["one\n", "two\n"] and r.logs.stderr == ["oops\n"], repr(r.logs))
    gap = (seen[1][1] - seen[0][1]) / 1e9 if len(seen) == 2 else 0
    check("stdout streams as printed (timestamps a second apart)", 0.8 < gap < 5, repr(seen))


def rich_results(sbx):
    r = sbx.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [4, 1, 9], label='series')\nplt.title('A line')\nplt.xlabel('x')\nplt.show()")
    pngs = [x for x in r.results if x.png]
    check("a matplotlib plot comes back as a PNG", len(pngs) == 1 and base64.b64decode(pngs[0].png).startswith(b"\x89PNG"), repr(r))
    chart = pngs[0].chart
    check("the plot's chart data: a line chart with its points",
          chart is not None and chart.type.value == "line" and chart.title == "A line" and chart.x_label == "x"
          and [list(p) for p in chart.elements[0].points] == [[1.0, 4.0], [2.0, 1.0], [3.0, 9.0]] and chart.elements[0].label == "series",
          repr(chart and chart.to_dict()))
    r = sbx.run_code("plt.bar(['a', 'b'], [3, 5])\nplt.show()")
    chart = r.results[0].chart if r.results else None
    check("a bar chart's data", chart is not None and chart.type.value == "bar"
          and [(e.label, e.value) for e in chart.elements] == [("a", 3.0), ("b", 5.0)], repr(chart and chart.to_dict()))
    r = sbx.run_code("import pandas as pd\npd.DataFrame({'name': ['ann', 'bob'], 'age': [31, 42]})")
    main = r.results[0] if r.results else None
    check("a pandas DataFrame comes back as HTML", main is not None and main.is_main_result and "<table" in (main.html or "")
          and "bob" in main.html, repr(r))
    check("... and as data, column by column", main.data == {"name": ["ann", "bob"], "age": [31, 42]}, repr(main.data))
    r = sbx.run_code("pd.DataFrame({'a': [1, 2, 3]})")
    check("a DataFrame's data['a'] holds its column", r.results[0].data["a"] == [1, 2, 3], repr(r.results[0].data))
    r = sbx.run_code("import numpy as np, scipy.integrate, scipy.optimize, scipy.stats, seaborn\n"
                     "(round(scipy.optimize.minimize_scalar(lambda v: (v - 3) ** 2).x, 3), round(scipy.integrate.quad(np.sin, 0, np.pi)[0], 6), "
                     "float(scipy.stats.norm.cdf(0)))")
    check("scipy and seaborn work (scipy's compiled modules without pythran)", r.text == "(3.0, 2.0, 0.5)", repr(r))
    r = sbx.run_code("from IPython.display import display, Markdown\ndisplay(Markdown('**hi**'))\n7")
    check("display() results, then the main result", [(x.markdown, x.is_main_result) for x in r.results] == [("**hi**", False), (None, True)]
          and r.text == "7", repr(r.results))


def charts(sbx):
    """Charts as E2B's interpreter reads a matplotlib figure."""
    def chart(code):
        r = sbx.run_code("import matplotlib.pyplot as plt, numpy as np\nplt.close('all')\n" + code + "\nplt.show()")
        found = [x.chart for x in r.results if x.chart is not None]
        return found[0] if found else None, r
    c, r = chart("plt.plot([0, 1, 2], [1, 4, 9], label='y')\nplt.xlabel('Time (s)')\nplt.ylabel('Height [m]')")
    check("a line chart: type, units from its labels, linear scales, its points",
          c is not None and c.type.value == "line" and (c.x_unit, c.y_unit) == ("s", "m") and c.x_scale.value == "linear"
          and [list(p) for p in c.elements[0].points] == [[0, 1], [1, 4], [2, 9]], repr(c and c.to_dict()))
    c, r = chart("plt.plot([1, 10, 100], [1, 2, 3])\nplt.xscale('log')")
    check("a log scale", c is not None and c.x_scale.value == "log" and c.elements[0].label == "Line 0", repr(c and c.to_dict()))
    c, r = chart("plt.plot(['mon', 'tue', 'wed'], [3, 1, 2])")
    check("a categorical scale", c is not None and c.x_scale.value == "categorical" and c.x_tick_labels == ["mon", "tue", "wed"],
          repr(c and c.to_dict()))
    c, r = chart("plt.scatter([1, 2], [3, 4], label='dots')")
    check("a scatter chart", c is not None and c.type.value == "scatter" and c.elements[0].label == "dots"
          and [list(p) for p in c.elements[0].points] == [[1, 3], [2, 4]], repr(c and c.to_dict()))
    c, r = chart("plt.bar(['a', 'b', 'c'], [3, 5, 4], label='sales')")
    check("a bar chart: labels, values, its group", c is not None and c.type.value == "bar"
          and [(e.label, e.value, e.group) for e in c.elements] == [("a", 3, "sales"), ("b", 5, "sales"), ("c", 4, "sales")],
          repr(c and c.to_dict()))
    c, r = chart("plt.pie([1, 3], labels=['one', 'three'])")
    check("a pie chart: each wedge's angle as the figure defines it", c is not None and c.type.value == "pie"
          and [(e.label, e.angle) for e in c.elements] == [("one", 90), ("three", 270)], repr(c and c.to_dict()))
    c, r = chart("data = {'Class A': [85, 90, 78, 92, 88], 'Class B': [95, 89, 76, 91, 84, 87], 'Class C': [75, 82, 88, 79, 86]}\n"
                 "fig, ax = plt.subplots()\nax.set_title('Exam Scores')\nax.set_xlabel('Class')\nax.set_ylabel('Score')\n"
                 "ax.boxplot(data.values(), labels=data.keys(), patch_artist=True)")
    boxes = c.elements if c is not None else []
    check("a box-and-whisker chart: quartiles, median, whiskers, outliers per box", c is not None and c.type.value == "box_and_whisker"
          and [(b.label, b.min, b.first_quartile, b.median, b.third_quartile, b.max, b.outliers) for b in boxes]
          == [("Class A", 78, 85, 88, 90, 92, []), ("Class B", 84, 84.75, 88, 90.5, 95, [76]), ("Class C", 75, 79, 82, 86, 88, [])],
          repr(c and c.to_dict()))
    c, r = chart("fig, ax = plt.subplots()\nax.add_artist(plt.Circle((0, 0), 1, fill=False))\nax.add_artist(plt.Circle((0, 0), 2, fill=False))\n"
                 "ax.grid(True)\nplt.title('Two circles')")
    check("a figure that is none of these (two circles) is 'unknown'", c is not None and c.type.value == "unknown"
          and c.title == "Two circles" and c.elements == [], repr(c and c.to_dict()))
    c, r = chart("fig, (a, b) = plt.subplots(1, 2)\nfig.suptitle('Two')\na.plot([1, 2])\nb.bar(['x'], [1])")
    check("several axes: a superchart of their charts", c is not None and c.type.value == "superchart" and c.title == "Two"
          and [e.type.value for e in c.elements] == ["line", "bar"], repr(c and c.to_dict()))


def images(sbx):
    def pngs(code):
        r = sbx.run_code(code)
        return [x for x in r.results if x.png and base64.b64decode(x.png).startswith(b"\x89PNG")], r
    found, r = pngs("import matplotlib.pyplot as plt\nplt.close('all')\nplt.plot([1, 2])\nplt.savefig('/tmp/plot.png')")
    check("plt.savefig in a cell also gives the figure as a PNG result", len(found) >= 1, repr(r))
    found, r = pngs("from PIL import Image\nimg = Image.new('RGB', (8, 8), 'red')\nimg.show()")
    check("Image.show() gives a PNG", len(found) == 1, repr(r))
    found, r = pngs("img")
    check("an image as the last expression gives a PNG", len(found) == 1 and found[0].is_main_result, repr(r))
    found, r = pngs("img.save('/tmp/red.png')")
    check("Image.save to a file gives a PNG too", len(found) == 1, repr(r))


def javascript(sbx):
    languages = sorted(c.language for c in sbx.list_code_contexts())
    check("the contexts listed from the start include javascript (as E2B's)", "javascript" in languages, repr(languages))
    r = sbx.run_code("let n = 40; const add = (a, b) => a + b; add(n, 2)", language="javascript")
    check("javascript: the last expression is the result", r.text == "42" and r.error is None, repr(r))
    r = sbx.run_code("console.log('hello', n); 'text'", language="js")
    check("javascript: state kept, console.log is stdout, a string's text is the string",
          r.logs.stdout == ["hello 40\n"] and r.text == "text", repr(r))
    r = sbx.run_code("await new Promise(r => setTimeout(() => r(7), 10))", language="javascript")
    check("javascript: top-level await, its value the result", r.error is None and r.text == "7", repr(r))
    r = sbx.run_code("null.x", language="javascript")
    check("javascript: an exception is an error with its name", r.error is not None and r.error.name == "TypeError", repr(r.error))
    r = sbx.run_code("process.env.CALL_VAR", language="javascript", envs={"CALL_VAR": "js call"})
    check("javascript: a call's env vars", r.text == "js call", repr(r))
    ctx = sbx.create_code_context(language="javascript", cwd="/tmp")
    r = sbx.run_code("typeof n + ' ' + process.cwd()", context=ctx)
    check("javascript: a context of its own, in its directory", r.text == "undefined /tmp", repr(r))
    t = time.time()
    try:
        sbx.run_code("while (true) {}", language="javascript", timeout=3)
        check("a long javascript call times out", False, "finished")
    except TimeoutException:
        pass
    r = sbx.run_code("n", language="javascript")
    check("... its timeout interrupts it, state kept", r.text == "40" and time.time() - t < 20, repr(r))


def errors(sbx):
    r = sbx.run_code("def f():\n    return 1 / 0\nf()")
    e = r.error
    check("an exception is an error with name, value and traceback", e is not None and e.name == "ZeroDivisionError"
          and e.value == "division by zero" and "return 1 / 0" in e.traceback and "\x1b[" not in e.traceback, repr(e and e.traceback))
    r = sbx.run_code("1 +")
    check("a syntax error too", r.error is not None and r.error.name == "SyntaxError", repr(r.error))
    check("the context still serves after errors", sbx.run_code("x").text == "41")
    r = sbx.run_code("import os; os._exit(1)")
    check("a kernel that dies is an error, KernelDied", r.error is not None and r.error.name == "KernelDied", repr(r.error))
    r = sbx.run_code("x")
    check("... and the context serves again, restarted: its state is gone", r.error is not None and r.error.name == "NameError", repr(r.error))
    sbx.run_code("x = 41")


def contexts(sbx):
    ctx = sbx.create_code_context()
    check("create a context", ctx.language == "python" and ctx.cwd == "/home/user", repr(ctx))
    sbx.run_code("y = 'mine'", context=ctx)
    r = sbx.run_code("y", context=ctx)
    check("a context keeps its own state (a string's text is the string, as E2B gives it)", r.text == "mine", repr(r))
    r = sbx.run_code("y")
    check("... apart from the default context", r.error is not None and r.error.name == "NameError", repr(r))
    r = sbx.run_code("x", context=ctx)
    check("... both ways", r.error is not None and r.error.name == "NameError", repr(r))
    check("list contexts", ctx.id in [c.id for c in sbx.list_code_contexts()])
    sbx.restart_code_context(ctx)
    r = sbx.run_code("y", context=ctx)
    check("restart a context: its state is gone", r.error is not None and r.error.name == "NameError", repr(r))
    r = sbx.run_code("import os\nos.getcwd()", context=sbx.create_code_context(cwd="/root"))
    check("a context may work anywhere the sandbox allows (kernels run as root, as E2B's)", r.text == "/root", repr(r))
    r = sbx.run_code("import os\nos.getcwd()", context=sbx.create_code_context(cwd="/tmp"))
    check("a context's working directory", r.text == "/tmp", repr(r))
    sbx.remove_code_context(ctx)
    check("delete a context", ctx.id not in [c.id for c in sbx.list_code_contexts()])
    try:
        sbx.run_code("1", context=ctx)
        check("an unknown context is refused", False, "ran")
    except NotFoundException as e:
        check("an unknown context is a 404 (NotFoundException)", "not found" in str(e), str(e))
    try:
        sbx.remove_code_context("no-such-context")
        check("deleting an unknown context is refused", False, "deleted")
    except NotFoundException:
        check("deleting an unknown context is a 404", True)


def env_and_bash(sbx):
    r = sbx.run_code("import os\nos.environ.get('CALL_VAR')", envs={"CALL_VAR": "per call"})
    check("a call's env vars", r.text == "per call", repr(r))
    check("... do not outlive the call", sbx.run_code("str(os.environ.get('CALL_VAR'))").text == "None")
    check("the sandbox's env vars reach the kernel, read back as E2B reads them", sbx.run_code("import os; os.getenv('SANDBOX_VAR')").text == "from create")
    r = sbx.run_code("echo $((40 + 2)); cd /tmp; V=kept", language="bash")
    check("a bash context runs bash", r.logs.stdout == ["42\n"] and r.error is None, repr(r))
    r = sbx.run_code("pwd; echo $V $SANDBOX_VAR", language="bash")
    check("bash keeps its state and directory, and sees the sandbox's env vars", r.logs.stdout == ["/tmp\nkept from create\n"]
          or "".join(r.logs.stdout) == "/tmp\nkept from create\n", repr(r.logs))
    r = sbx.run_code("echo $CALL_VAR", language="bash", envs={"CALL_VAR": "bash call"})
    check("bash: a call's env vars", "".join(r.logs.stdout) == "bash call\n", repr(r.logs))
    check("... do not outlive the call", "".join(sbx.run_code("echo ${CALL_VAR:-gone}", language="bash").logs.stdout) == "gone\n")
    r = sbx.run_code("echo no >&2; false", language="bash")
    check("bash: a failing command is an error", r.error is not None and r.logs.stderr == ["no\n"], repr(r))
    ctx = sbx.create_code_context(language="bash")
    check("a bash context of its own", ctx.language == "bash" and "".join(sbx.run_code("echo ${V:-unset}", context=ctx).logs.stdout) == "unset\n")


def timeouts(sbx):
    sbx.run_code("z = 'still here'")
    other = sbx.create_code_context()
    t = time.time()
    try:
        sbx.run_code("import time\ntime.sleep(120)", timeout=3)
        check("a long call times out", False, "finished")
    except TimeoutException:
        check("a long call times out after its timeout", time.time() - t < 30, f"{time.time() - t:.1f} s")
    t = time.time()
    r = sbx.run_code("z")
    check("the timeout interrupted the kernel: the context answers at once, state kept", r.text == "still here" and time.time() - t < 10,
          f"{r!r} after {time.time() - t:.1f} s")
    check("other contexts keep working", sbx.run_code("1 + 1", context=other).text == "2")
    check("the sandbox keeps working", sbx.commands.run("echo alive").stdout == "alive\n")
    try:
        sbx.run_code("sleep 120", language="bash", timeout=3)
        check("a long bash call times out", False, "finished")
    except TimeoutException:
        pass
    t = time.time()
    r = sbx.run_code("echo $V", language="bash")
    check("... and a bash call's timeout interrupts it too, state kept", "".join(r.logs.stdout) == "kept\n" and time.time() - t < 10, repr(r.logs))


def bad_input(sbx):
    try:
        sbx.run_code("1", language="python", context=sbx.list_code_contexts()[0])
        check("language and context together are refused by the SDK", False, "ran")
    except InvalidArgumentException:
        pass
    ctx_id = sbx.list_code_contexts()[0].id
    r = raw(sbx, "POST", "/execute", {"code": "1", "language": "python", "context_id": ctx_id})
    check("language and context together are a 400", r.status_code == 400 and "not both" in r.json()["message"], r.text)
    r = raw(sbx, "POST", "/execute", content=b"{not json")
    check("malformed JSON is a 400", r.status_code == 400 and "not valid JSON" in r.json()["message"], r.text)
    r = raw(sbx, "POST", "/execute", {"code": 5})
    check("code that is not a string is a 400", r.status_code == 400, r.text)
    r = raw(sbx, "POST", "/execute", {"code": "1", "language": "cobol"})
    check("an unknown language is a 400 that names the ones there are", r.status_code == 400 and "python" in r.json()["message"], r.text)
    r = raw(sbx, "POST", "/execute", {"code": "1", "context_id": "nope"})
    check("an unknown context_id is a 404", r.status_code == 404, r.text)
    r = raw(sbx, "POST", "/contexts", {"cwd": "/no/such/dir"})
    check("a context in a missing directory is a 400", r.status_code == 400, r.text)
    r = raw(sbx, "POST", "/execute", {"code": "1", "env_vars": {"BAD NAME": "x"}})
    check("a bad env var name is a 400", r.status_code == 400, r.text)
    check("the interpreter keeps serving after bad input", sbx.run_code("x").text == "41")


def volume_mounts():
    """A warm env's sandbox with a volume: its image was saved without the
    mount, so it boots and runs the interpreter's start before create returns."""
    vol = Volume.create(f"ci-{int(time.time() * 1000)}")
    try:
        vol.write_file("/in.csv", "a,b\n1,2\n3,4\n")
        t = time.time()
        sbx = Sandbox.create(volume_mounts={"/data": vol}, timeout=300, request_timeout=600)
        try:
            r = sbx.run_code("import pandas as pd\ndf = pd.read_csv('/data/in.csv')\ndf.to_csv('/data/out.csv', index=False)\nint(df.b.sum())")
            check(f"volume_mounts on the code interpreter: create (booted, start run) and a cell reading the volume in {time.time() - t:.1f} s",
                  r.text == "6", repr(r))
            check("... and what the cell wrote is in the volume", vol.read_file("/out.csv") == "a,b\n1,2\n3,4\n")
        finally:
            sbx.kill()
    finally:
        Volume.destroy(vol.volume_id)


def main():
    started = time.time()
    # A fresh server builds its built-in envs in the background from its start
    # (minutes, once); a create meanwhile answers at once and says so.
    try:
        early = Sandbox.create(timeout=60, request_timeout=30)
        early.kill()
        check("a create before the build ends answers at once (it was already built)", True)
    except Exception as e:
        check("a create while the default template builds answers at once, saying it is being built",
              time.time() - started < 25 and "being built" in str(e), repr(e))
        r = httpx.post(API + "/sandboxes", headers=KEY, json={"templateID": "code-interpreter-v1"}, timeout=30)
        check("... as E2B's 503 with Retry-After", r.status_code == 503 and r.json()["code"] == 503 and r.headers.get("retry-after") == "30",
              f"{r.status_code} {r.headers} {r.text}")
    built = eventually(lambda: httpx.get(API + "/v1/envs/code-interpreter-v1", headers=KEY, timeout=30).status_code == 200, seconds=1800, every=5)
    check(f"the default template is built in the background ({time.time() - started:.0f} s)", built, "not built in 30 minutes")
    sbx = Sandbox.create(envs={"SANDBOX_VAR": "from create"}, timeout=900)
    check("Sandbox.create() of the default template", sbx.sandbox_id.startswith("sbx_"))
    try:
        state_and_streams(sbx)
        rich_results(sbx)
        charts(sbx)
        images(sbx)
        javascript(sbx)
        errors(sbx)
        contexts(sbx)
        env_and_bash(sbx)
        timeouts(sbx)
        bad_input(sbx)
        # A second sandbox starts warm from the env's memory image, kernel running.
        t = time.time()
        other = Sandbox.create(timeout=120)
        try:
            r = other.run_code("1 + 1")
            elapsed = time.time() - t
            check(f"a second sandbox: create and first result in {elapsed * 1000:.0f} ms", r.text == "2" and elapsed < 10, repr(r))
            check("sandboxes do not share a kernel", other.run_code("x").error is not None)
        finally:
            other.kill()
        volume_mounts()
    finally:
        sbx.kill()
    print(f"all checks passed in {time.time() - started:.1f} s")


main()
