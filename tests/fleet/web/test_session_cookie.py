"""The session cookie is written only when a request changes it.

A browser sends requests side by side (the node page's live stream, its stylesheet and script);
the one that answers last sets the cookie. A request that only read the session must not send the
cookie back as it read it, or a message flashed by another request in between is lost.
"""


def test_a_request_that_changes_nothing_sends_no_cookie(logged_in):
    logged_in.get("/nodes/")  # the first request after login settles the organisation
    r = logged_in.get("/nodes/")
    assert r.status_code == 200
    assert "Set-Cookie" not in r.headers


def test_a_flash_survives_a_request_that_started_before_it(app, logged_in, form_token):
    logged_in.get("/nodes/")
    before = logged_in.get_cookie("session").value
    # Needs no node: the argument is refused before the node is looked up.
    r = logged_in.post("/nodes/n1/commands", data={
        "command": "identify", "arg": "x", "csrf_token": form_token(logged_in, "/nodes/")})
    assert r.status_code == 303
    # A request the browser sent with the cookie from before the flash, answering after it.
    late = app.test_client()
    late.set_cookie("session", before)
    answer = late.get("/nodes/")
    assert answer.status_code == 200
    for header in answer.headers.getlist("Set-Cookie"):  # what the browser would store
        name, _, rest = header.partition("=")
        logged_in.set_cookie(name, rest.split(";", 1)[0])
    assert "is not a whole number" in logged_in.get("/nodes/").get_data(as_text=True)
