"""HTTPS for the web UI: served directly with a certificate, or behind trusted reverse proxies.

Directly: cheroot (CherryPy's WSGI server) with Python's own `ssl`, because waitress, which
serves plain HTTP on loopback, has no TLS at all; cheroot is pure Python, threaded like waitress,
embeddable in `fleet run`'s process, and its TLS adapter is a thin layer over `ssl.SSLContext`,
so we set the protocol floor ourselves.

Behind a proxy: the X-Forwarded-* headers are believed only when the TCP peer is one of
TRUSTED_PROXIES; from anybody else they are ignored, so a client cannot pick its own address for
the login rate limit or pretend it came over HTTPS.
"""

import ipaddress
import logging
import os
import ssl
import threading
import time

from flask import request
from werkzeug.middleware.proxy_fix import ProxyFix

from fleet.settings import SettingsError, WebSettings

log = logging.getLogger("fleet.web.https")

# One year, as browsers' preload lists ask; no includeSubDomains: a city's other hosts under the
# same domain are not ours to force onto HTTPS.
HSTS = "max-age=31536000"


FORWARDED_HEADERS = ("HTTP_X_FORWARDED_", "HTTP_FORWARDED")


class TrustedProxyFix:
    """WSGI middleware: ProxyFix for requests whose peer is a trusted proxy, untouched otherwise."""

    def __init__(self, app, trusted):
        self.app = app
        self.trusted = tuple(trusted)
        # One hop: the proxy in front of us appends the client's address as the last entry;
        # entries before it were written by the client and are not believed.
        self.fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=1, x_port=1)

    def is_trusted(self, addr: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(addr or "")
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def __call__(self, environ, start_response):
        if self.is_trusted(environ.get("REMOTE_ADDR")):
            return self.fixed(environ, start_response)
        # From anybody else the headers are dropped, so no code further in can be fooled by them.
        for name in [k for k in environ if k.startswith(FORWARDED_HEADERS)]:
            del environ[name]
        return self.app(environ, start_response)


def init_app(app, web: WebSettings) -> None:
    """Secure cookies and HSTS when browsers come over HTTPS; forwarded headers from proxies."""
    app.config["POLYLINK_WEB"] = web
    if web.https:
        app.config.update(SESSION_COOKIE_SECURE=True, PREFERRED_URL_SCHEME="https")
    # Always in place: with no trusted proxy it only drops the forwarded headers.
    app.wsgi_app = TrustedProxyFix(app.wsgi_app, web.trusted_proxies)

    @app.after_request
    def strict_transport(response):
        # Only on a request that came over HTTPS (RFC 6797 8.1: browsers ignore it over HTTP).
        if request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        return response


def tls_context(web: WebSettings) -> ssl.SSLContext:
    """A server context with the certificate and key; TLS 1.2 or newer only."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(web.tls_cert), str(web.tls_key))
    except (OSError, ssl.SSLError) as e:
        raise SettingsError(f"cannot use WEB_TLS_CERT={web.tls_cert} with WEB_TLS_KEY="
                         f"{web.tls_key}: {e}") from None
    return context


# How often a TLS handshake looks at the certificate files' modification times: a renewed
# certificate (fleet tls renew, an ACME client) is served within this, with no restart.
RELOAD_CHECK_S = 2.0


class CertificateFiles:
    """The server context for WEB_TLS_CERT/KEY, made again when either file changes on disk.

    Checked at most every RELOAD_CHECK_S seconds, at a handshake. A pair that does not load (the
    certificate written, its new key not yet) keeps the context that works and is tried again at
    the next check, so a renewal in progress never takes the web UI down.
    """

    def __init__(self, web: WebSettings, clock=time.monotonic):
        self.web, self.clock = web, clock
        self.stamp = self._stamp()
        self.context = tls_context(web)  # a bad certificate or key fails here, before we bind
        self.checked = clock()
        self.lock = threading.Lock()
        self.problem: str | None = None

    def _stamp(self):
        stats = []
        for path in (self.web.tls_cert, self.web.tls_key):
            try:
                st = os.stat(path)
            except OSError:
                return None
            stats.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(stats)

    def current(self) -> ssl.SSLContext:
        """The context for the next handshake: the files' current pair, or the last good one."""
        if self.clock() - self.checked < RELOAD_CHECK_S:
            return self.context
        with self.lock:
            self.checked = self.clock()
            stamp = self._stamp()
            if stamp is None or stamp == self.stamp:
                return self.context
            try:
                context = tls_context(self.web)
            except SettingsError as e:
                if str(e) != self.problem:
                    self.problem = str(e)
                    log.warning("keeping the certificate in use: %s", e)
                return self.context
            self.context, self.stamp, self.problem = context, stamp, None
            log.info("serving the renewed certificate %s", self.web.tls_cert)
            return context


class HTTPSServer:
    """cheroot serving app over TLS on (host, port); run() until KeyboardInterrupt."""

    def __init__(self, app, web: WebSettings, port: int, threads: int = 8):
        from cheroot import wsgi
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        files = CertificateFiles(web)

        class RenewingAdapter(BuiltinSSLAdapter):
            """cheroot's adapter, with the context of the certificate files as they are now."""

            def wrap(self, sock):
                self.context = files.current()
                return super().wrap(sock)

        adapter = RenewingAdapter(str(web.tls_cert), str(web.tls_key))
        adapter.context = files.context
        self.files = files
        self.server = wsgi.Server((web.host, port), app, numthreads=threads,
                                  server_name="polylink")
        self.server.ssl_adapter = adapter
        self.server.prepare()  # binds now: a taken port is an OSError at start, not later

    def run(self) -> None:
        try:
            self.server.serve()
        finally:
            self.server.stop()
