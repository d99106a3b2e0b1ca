"""HTTP for the adapters that POST (webhook, NGSI-LD): one kept-alive connection per
destination, TLS verified, and the answer sorted into delivered, refused or down.

The standard library's http.client is enough for one POST at a time over a kept-alive
connection; it adds no dependency and nothing to pin.
"""

import http.client
import ssl
from urllib.parse import urlsplit

from .adapter import DestinationDown, ExportError

# Answers that say "not now" rather than "not this": the batch is sent again later.
DOWN_STATUSES = {401, 403, 404, 405, 407, 408, 421, 425, 429}
LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def check_url(url: str, allow_http_loopback: bool = True) -> str:
    """An http(s) URL; plain http only to this machine (anything else must be TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ExportError(f"url must be https://host/path, got {url!r}")
    if parts.scheme == "http" and not (allow_http_loopback and parts.hostname in LOOPBACK):
        raise ExportError("url must use https:// (plain http only to localhost), so readings"
                          " and the secret never cross a network unencrypted")
    return url


def check(kind: str, url: str, options: dict, known: tuple[str, ...] = ("ca_file",)) -> dict:
    """The URL (check_url) and the options of an adapter that POSTs: only those it knows."""
    check_url(url)
    unknown = set(options) - set(known)
    if unknown:
        raise ExportError(f"{kind}: unknown options {', '.join(sorted(unknown))}"
                          f" (known: {', '.join(known)})")
    return dict(options)


class Client:
    """POSTs to one base URL over one kept-alive connection."""

    def __init__(self, url: str, timeout: float, ca_file: str | None = None):
        self.parts = urlsplit(url)
        self.timeout = timeout
        self.ca_file = ca_file
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self.parts.hostname, self.parts.port
        if self.parts.scheme == "https":
            ctx = ssl.create_default_context(cafile=self.ca_file)
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=ctx)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def request(self, method: str, path: str | None, body: bytes | None,
                headers: dict) -> tuple[int, bytes]:
        """(status, body) of one request; DestinationDown when it could not be made at all."""
        target = path if path is not None else (self.parts.path or "/")
        if path is None and self.parts.query:
            target += "?" + self.parts.query
        for attempt in (1, 2):  # a kept-alive connection the server closed: reconnect once
            if self.conn is None:
                self.conn = self._connect()
            try:
                self.conn.request(method, target, body=body, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except ssl.SSLError as e:
                self.close()
                raise DestinationDown(f"TLS with {self.parts.hostname} failed: {e}") from None
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as e:
                self.close()
                if attempt == 2:
                    raise DestinationDown(f"{self.parts.netloc} closed the connection: {e}") \
                        from None
            except TimeoutError:
                self.close()
                raise DestinationDown(f"{self.parts.netloc} did not answer within"
                                      f" {self.timeout:g} s") from None
            except OSError as e:
                self.close()
                raise DestinationDown(f"cannot reach {self.parts.netloc}:"
                                      f" {e.strerror or e}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def describe(status: int, body: bytes) -> str:
    """An answer in plain words, with the start of what the server said."""
    text = body[:200].decode("utf-8", "replace").strip()
    reason = http.client.responses.get(status, "")
    return f"HTTP {status} {reason}" + (f": {text}" if text else "")
