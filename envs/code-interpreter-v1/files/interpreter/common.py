"""What the interpreter's parts share: logging, the sandbox's variables,
result events in the SDK's shape, and the error that becomes a 4xx."""
import json
import re
import sys
import time

SANDBOX_ENV_FILE = "/run/sprout/env.json"
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Jupyter MIME types -> the SDK's result keys.
FORMATS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "application/vnd.sprout.data+json": "data",
    "application/vnd.sprout.chart+json": "chart",
}



class BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message



def log(*parts):
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def shell_quote(value):
    return "'" + value.replace("'", "'\"'\"'") + "'"


def sandbox_env():
    """The sandbox's own environment variables, as Sprout wrote them."""
    try:
        with open(SANDBOX_ENV_FILE) as f:
            data = json.load(f)
        return {str(k): str(v) for k, v in data.items() if NAME.match(str(k))}
    except (OSError, ValueError, AttributeError):
        return {}



def result_event(data, main):
    event = {"type": "result", "is_main_result": main}
    extra = {}
    for mime, value in data.items():
        key = FORMATS.get(mime)
        if key == "text" and isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            # A string's text is the string, as E2B gives it: 'bar' -> bar.
            value = value[1:-1]
        if key:
            event[key] = value
        else:
            extra[mime] = value
    if extra:
        event["extra"] = extra
    return event

