"""The demo stack's "web" service: a stand-in for a web tier whose error rate remediator watches.

It serves itself ten requests a second and exposes Prometheus' http_requests_total{code} at /metrics.
`curl -X POST localhost:8080/break` makes it answer 500 until the process restarts: HighErrorRate fires,
remediator restarts the container, the fresh process answers 200 again and the alert resolves.
Standard library only, so it runs on the plain python image.
"""

import collections
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = 8080
counts: collections.Counter[str] = collections.Counter()
broken = threading.Event()
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/metrics":
            with lock:
                lines = [f'http_requests_total{{code="{code}"}} {n}' for code, n in sorted(counts.items())]
            self._answer(200, "# TYPE http_requests_total counter\n" + "\n".join(lines) + "\n")
            return
        code = 500 if broken.is_set() else 200
        with lock:
            counts[str(code)] += 1
        self._answer(code, "broken\n" if code == 500 else "ok\n")

    def do_POST(self) -> None:
        if self.path == "/break":
            broken.set()
            self._answer(200, "now answering 500 until restarted\n")
        else:
            self._answer(404, "POST /break\n")

    def _answer(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


def traffic() -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while True:
        try:
            opener.open(f"http://127.0.0.1:{PORT}/", timeout=2).close()
        except OSError:
            pass  # a 500 raises HTTPError, an OSError: it has been counted already
        time.sleep(0.1)


if __name__ == "__main__":
    threading.Thread(target=traffic, daemon=True).start()
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
