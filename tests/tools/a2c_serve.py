#!/usr/bin/env python3
"""acme2certifier's WSGI application over HTTPS, for the ARI tests.

usage: ACME_SRV_CONFIGFILE=acme_srv.cfg a2c_serve.py PORT CERT KEY REQUEST_LOG

Python's own wsgiref server, one thread per connection, TLS 1.2 at least,
on 127.0.0.1 only. Each request is written to REQUEST_LOG as one JSON
line: its method, its path and, for a JWS POST, the decoded payload, so
that a test can see what the client sent (acme2certifier keeps no record
of `replaces`).

A test makes it rate-limit new orders, as Let's Encrypt does, by writing
`rate_limit.json` beside REQUEST_LOG: {"count": N, "retry_after": "S"}
answers the next N new orders 429 with a `rateLimited` problem and
`Retry-After: S` (acme2certifier has no rate limits of its own).
"""
import base64
import json
import os
import socketserver
import ssl
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

port, cert, key, request_log = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
from acme2certifier.share.acme2certifier_wsgi import application  # noqa: E402 (reads the config)

lock = threading.Lock()


def payload_of(body):
    try:
        jws = json.loads(body)
        text = jws.get("payload", "")
        if not text:
            return None
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, AttributeError):
        return None


def logged(environ, start_response):
    method = environ["REQUEST_METHOD"]
    body = b""
    if method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        import io

        environ["wsgi.input"] = io.BytesIO(body)
    line = {"method": method, "path": environ.get("PATH_INFO", "")}
    if body:
        line["payload"] = payload_of(body)
    with lock:
        with open(request_log, "a") as f:
            f.write(json.dumps(line) + "\n")
        limited = line["path"] == "/acme/neworders" and take_rate_limit()
    if limited:
        body = json.dumps({
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": "too many new orders (test limit)",
        }).encode()
        start_response("429 Too Many Requests", [
            ("Content-Type", "application/problem+json"),
            ("Retry-After", limited),
            ("Content-Length", str(len(body))),
        ])
        return [body]
    return application(environ, start_response)


def take_rate_limit():
    """The Retry-After to answer this new order with, if it is limited."""
    path = os.path.join(os.path.dirname(request_log), "rate_limit.json")
    try:
        with open(path) as f:
            limit = json.load(f)
    except (OSError, ValueError):
        return None
    if limit.get("count", 0) <= 0:
        return None
    limit["count"] -= 1
    with open(path, "w") as f:
        json.dump(limit, f)
    return str(limit["retry_after"])


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
ctx.load_cert_chain(cert, key)


class Handler(WSGIRequestHandler):
    def setup(self):
        self.request.settimeout(30)
        self.request = ctx.wrap_socket(self.request, server_side=True)
        super().setup()

    def address_string(self):
        return self.client_address[0]

    def get_environ(self):
        env = super().get_environ()
        env["HTTPS"] = "on"
        env["wsgi.url_scheme"] = "https"
        return env

    def handle(self):
        try:
            super().handle()
        except (ssl.SSLError, OSError) as err:
            sys.stderr.write(f"connection from {self.client_address[0]}: {err}\n")


class Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


server = Server(("127.0.0.1", port), Handler)
server.set_app(logged)
server.base_environ["HTTPS"] = "on"
print(f"listening on https://127.0.0.1:{port}/directory", flush=True)
server.serve_forever()
