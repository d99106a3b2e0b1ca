"""net/http.py: what the OTA download refuses before it opens a connection."""

from polylink.net import http


class NoConnection:
    """A HAL whose connections must not be opened."""

    def __init__(self):
        self.opened = []

    async def open_connection(self, host, port, tls=None):
        self.opened.append((host, port, tls))
        raise OSError("no network in this test")


async def test_an_https_url_without_a_ca_is_refused_before_connecting():
    hal = NoConnection()
    try:
        await http.get(hal, "https://fleet.example:8443/ota/v1", "/nodes/n-1/offer",
                       login=("n-1", "file password"))
    except http.HTTPError as e:
        if "needs ota.ca" not in str(e) or "fleet.example" not in str(e):
            raise AssertionError("message %r" % (str(e),)) from None
    else:
        raise AssertionError("an https:// URL without a CA was fetched")
    if hal.opened:
        raise AssertionError("connected anyway: %r" % (hal.opened,))


async def test_with_a_ca_the_connection_is_opened_with_it():
    hal = NoConnection()
    try:
        await http.get(hal, "https://fleet.example:8443/ota/v1", "/x", tls_ca="ca.pem")
    except http.HTTPError:
        pass  # the test's HAL has no network
    if hal.opened != [("fleet.example", 8443, {"ca": "ca.pem"})]:
        raise AssertionError("opened %r" % (hal.opened,))
