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
import ssl

from flask import request
from werkzeug.middleware.proxy_fix import ProxyFix

from fleet.settings import SettingsError, WebSettings

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


class HTTPSServer:
    """cheroot serving app over TLS on (host, port); run() until KeyboardInterrupt."""

    def __init__(self, app, web: WebSettings, port: int, threads: int = 8):
        from cheroot import wsgi
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        context = tls_context(web)  # a bad certificate or key fails here, before we bind
        adapter = BuiltinSSLAdapter(str(web.tls_cert), str(web.tls_key))
        adapter.context = context
        self.server = wsgi.Server((web.host, port), app, numthreads=threads,
                                  server_name="polylink")
        self.server.ssl_adapter = adapter
        self.server.prepare()  # binds now: a taken port is an OSError at start, not later

    def run(self) -> None:
        try:
            self.server.serve()
        finally:
            self.server.stop()
