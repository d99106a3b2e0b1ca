"""Assertion helpers for firmware tests that run under both pytest and MicroPython."""


def raises(exc, fn, *args, **kwargs):
    """Call fn(*args, **kwargs), fail unless it raises exc; return the exception for inspection."""
    try:
        fn(*args, **kwargs)
    except exc as e:
        return e
    raise AssertionError("%s did not raise %s" % (getattr(fn, "__name__", fn), exc.__name__))


def eq(got, want, what=""):
    """Fail with both values shown unless got == want."""
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what or "value", got, want))
