"""The fenced example's two services, by the role in argv[1].

web     GET /              calls orders through ORDERS_URL and says what it answered
        GET /call/HOST/PORT opens a TCP connection there and says whether it could
        GET /hog/MB        allocates MB megabytes and holds them (past its limit: OOM-killed)
orders  GET /              the orders, as JSON
Both    GET /health        ready
"""

import json
import os
import socket
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROLE = sys.argv[1]
HELD = []


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if parts == ["health"]:
            body = "ready"
        elif ROLE == "orders":
            body = json.dumps({"orders": [{"id": 42, "item": "teapot"}], "by": os.environ["INSTANCE"]})
        elif parts[0] == "call" and len(parts) == 3:
            try:
                socket.create_connection((parts[1], int(parts[2])), timeout=3).close()
                body = f"connected to {parts[1]}:{parts[2]}"
            except OSError as exc:
                body = f"could not connect to {parts[1]}:{parts[2]}: {exc.strerror or exc}"
        elif parts[0] == "hog" and len(parts) == 2:
            HELD.append(bytearray(int(parts[1]) * 1024 * 1024))  # zero-filled: touched
            body = f"holding {sum(len(b) for b in HELD) // 2**20} MB"
        else:
            with urllib.request.urlopen(os.environ["ORDERS_URL"] + "/", timeout=5) as answer:
                body = f"{os.environ['INSTANCE']} asked {os.environ['ORDERS_URL']}: {answer.read().decode()}"
        data = (body + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
