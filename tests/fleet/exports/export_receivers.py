"""HTTP receivers the export tests send to: a webhook endpoint as an integrator would write one
(verifies the signature, stores records by (name, time)), run in a thread on a free port."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fleet.exports import webhook


class WebhookReceiver:
    """Keeps every record it accepted by (resolved name, time); can be told to fail or refuse."""

    def __init__(self, key: str | None = None, port: int = 0):
        self.key = key
        self.dupes = 0  # records that came again (a re-sent batch), not stored twice
        self.records: dict[tuple, dict] = {}
        self.order: list[tuple] = []
        self.posts = 0
        self.bad_signatures = 0
        self.down = False  # answer 503 to everything
        self.refuse_node: str | None = None  # answer 422 to a pack holding this node
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        rx = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with rx.lock:
                    rx.posts += 1
                    if rx.down:
                        return self._answer(503, b"maintenance")
                    if rx.key is not None and not webhook.verify(
                            rx.key, self.headers.get(webhook.SIGNATURE_HEADER, ""), body,
                            time.time()):
                        rx.bad_signatures += 1
                        return self._answer(401, b"bad signature")
                    pack = json.loads(body)
                    if rx.refuse_node and any(rx.refuse_node in r.get("bn", "") for r in pack):
                        return self._answer(422, b"unknown device")
                    bn, bt = "", 0.0
                    for r in pack:
                        bn, bt = r.get("bn", bn), r.get("bt", bt)
                        key = (bn + r["n"], round(bt + r.get("t", 0), 6))
                        if key not in rx.records:
                            rx.order.append(key)
                        else:
                            rx.dupes += 1
                        rx.records[key] = r
                    return self._answer(204, b"")

            def _answer(self, status, text):
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

        return Handler
