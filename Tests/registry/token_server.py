"""A registry token service for the image tests (the role auth.docker.io
plays for Docker Hub): GET /token?service=…&scope=repository:NAME:pull with
the test's basic login answers a JWT (RS256, signed with openssl, the
certificate in its x5c header) granting that scope; a wrong login gets 401.
docker-registry, configured with the certificate as its root bundle,
verifies the token. Usage: token_server.py DIR USER PASSWORD (DIR holds
key.pem and cert.der); prints its port, then serves until killed."""
import base64
import json
import subprocess
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

directory, user, password = sys.argv[1], sys.argv[2], sys.argv[3]
x5c = base64.b64encode(open(directory + "/cert.der", "rb").read()).decode()
expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        query = parse_qs(urlparse(self.path).query)
        if self.headers.get("Authorization", "") != expected:
            self.send_response(401)
            self.end_headers()
            return
        scope = query.get("scope", [""])[0].split(":")
        access = [{"type": scope[0], "name": scope[1], "actions": scope[2].split(",")}] if len(scope) == 3 else []
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [x5c]}
        claims = {"iss": "sprout-test-issuer", "sub": user, "aud": query.get("service", [""])[0], "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing = (b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())).encode()
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", directory + "/key.pem"], input=signing,
                                   capture_output=True, check=True).stdout
        body = json.dumps({"token": signing.decode() + "." + b64(signature), "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
