"""claim.py: the claim id is random, kept in flash, and names the node's two claim topics."""

from _check import eq
from _fw import rmtree, tmpdir
from polylink import claim


class _Hal:
    def __init__(self, root):
        self.root = root

    def path(self, name):
        return self.root + "/" + name


def test_claim_id_is_made_once_and_kept():
    d = tmpdir("claim")
    try:
        first = claim.claim_id(_Hal(d))
        if not (first.startswith("c-") and len(first) == 18):
            raise AssertionError("claim id %r is not c- and 16 hex digits" % first)
        eq(claim.claim_id(_Hal(d)), first, "read back from flash")
        other = tmpdir("claim2")
        try:
            if claim.claim_id(_Hal(other)) == first:
                raise AssertionError("two boards drew the same claim id")
        finally:
            rmtree(other)
    finally:
        rmtree(d)


def test_topics_carry_token_and_claim_id():
    eq(claim.topics("ct1a2b", "c-00ff"),
       ("pl/v1/claim/ct1a2b/c-00ff/req", "pl/v1/claim/ct1a2b/c-00ff/resp"))
