"""A tiny HTTP service for runtime tests, steered by its environment.

    FAIL_AT_START=msg   print "CRITICAL <msg>" on stderr and exit 3
    START_DELAY=s       sleep before listening
    DATA_DIR            (stateful) append the instance name to DATA_DIR/starts
    GET /boom           log "ERROR boom requested" on stderr
Every GET answers the instance's name.
"""

APP = """\
import os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if os.environ.get("FAIL_AT_START"):
    print("CRITICAL " + os.environ["FAIL_AT_START"], file=sys.stderr, flush=True)
    sys.exit(3)
time.sleep(float(os.environ.get("START_DELAY", "0")))
data_dir = os.environ.get("DATA_DIR")
if data_dir:
    with open(os.path.join(data_dir, "starts"), "a") as f:
        f.write(os.environ["INSTANCE"] + "\\n")

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/boom":
            print("ERROR boom requested", file=sys.stderr, flush=True)
        body = os.environ["INSTANCE"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

print("INFO listening", os.environ["INSTANCE"], flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""
