"""A small HTTP/1.1 GET client on the HAL's asyncio streams: status, headers, body in chunks.

Enough for the OTA agent: one request per connection (Connection: close), an optional Range for
resuming, the body handed over piece by piece so nothing is ever held whole in RAM.
"""

import binascii

from polylink.net import stream


class HTTPError(OSError):
    """The server could not be reached, or answered with something we cannot use."""


def split_url(url):
    """(tls, host, port, path prefix) of an http:// or https:// URL."""
    if url.startswith("http://"):
        tls = None
        rest = url[7:]
        port = 80
    elif url.startswith("https://"):
        tls = {}
        rest = url[8:]
        port = 443
    else:
        raise HTTPError("URL must start with http:// or https://: %r" % url)
    i = rest.find("/")
    hostport = rest if i < 0 else rest[:i]
    prefix = "" if i < 0 else rest[i:].rstrip("/")
    j = hostport.rfind(":")
    host = hostport
    if j > 0:
        host = hostport[:j]
        try:
            port = int(hostport[j + 1:])
        except ValueError:
            raise HTTPError("bad port in URL %r" % url) from None
    if not host:
        raise HTTPError("no host in URL %r" % url)
    return tls, host, port, prefix


class Response:
    """An open response: status, length (Content-Length or None), start (Range start)."""

    def __init__(self, reader, writer, status, length, start):
        self.reader = reader
        self.writer = writer
        self.status = status
        self.length = length
        self.start = start
        self.left = length

    async def read(self, n):
        """Up to n body bytes; b"" at the end. Raises HTTPError if the body is cut short."""
        if self.left is not None:
            if self.left <= 0:
                return b""
            n = min(n, self.left)
        b = await self.reader.read(n)
        if not b:
            if self.left:
                raise HTTPError("connection closed with %d body bytes missing" % self.left)
            return b""
        if self.left is not None:
            self.left -= len(b)
        return b

    async def close(self):
        await stream.close(self.writer)


async def get(hal, url, path, start=0, tls_ca=None, login=None):
    """GET url's prefix + path (from byte start) and return a Response with the headers read.

    login: (user, password) sent as HTTP Basic, or None.
    """
    tls, host, port, prefix = split_url(url)
    if tls is not None:
        if not tls_ca:
            # mbedTLS without a CA checks nothing: the file login would go to whoever answers.
            raise HTTPError("an https:// URL needs ota.ca, the CA file to check %s by" % host)
        tls["ca"] = tls_ca
    try:
        reader, writer = await hal.open_connection(host, port, tls)
    except OSError as e:
        raise HTTPError("cannot reach %s:%d: %s" % (host, port, e)) from None
    try:
        req = "GET %s%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (prefix, path, host)
        if start:
            req += "Range: bytes=%d-\r\n" % start
        if login:
            cred = binascii.b2a_base64(("%s:%s" % login).encode()).strip().decode()
            req += "Authorization: Basic %s\r\n" % cred
        writer.write((req + "\r\n").encode())
        await writer.drain()
        line = await reader.readline()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HTTPError("not an HTTP response: %r" % line[:40])
        status = int(parts[1])
        length = None
        got = 0
        while True:
            line = await reader.readline()
            if not line:
                raise HTTPError("connection closed in the headers")
            if line in (b"\r\n", b"\n"):
                break
            k = line.find(b":")
            if k < 0:
                continue
            name = line[:k].strip().lower()
            value = line[k + 1:].strip()
            if name == b"content-length":
                length = int(value)
            elif name == b"content-range" and value.startswith(b"bytes "):
                got = int(value[6:].split(b"-")[0])
            elif name == b"transfer-encoding" and value.lower() != b"identity":
                raise HTTPError("chunked transfer encoding is not supported")
        if status == 206 and got != start:
            raise HTTPError("server resumed at byte %d, asked for %d" % (got, start))
        return Response(reader, writer, status, length, start if status == 206 else 0)
    except ValueError as e:
        # MicroPython's ssl refuses a server's certificate with a ValueError, at the handshake
        # (the first write); a malformed status line or length lands here too.
        await stream.close(writer)
        raise HTTPError("%s:%d: %s" % (host, port, str(e).strip())) from None
    except BaseException:
        await stream.close(writer)
        raise
