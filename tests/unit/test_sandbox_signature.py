"""The sandbox checks a request's signature against the query as the client signed it (sandbox/iam.py)."""

from __future__ import annotations

from submitter.sandbox.iam import signed_path


def test_the_query_is_re_encoded_as_sigv4_signs_it() -> None:
    # What moto gets back from Werkzeug: %2F and UTF-8 decoded, the other escapes kept.
    assert signed_path("/bkt?list-type=2&prefix=a/b/&encoding-type=url") == (
        "/bkt?list-type=2&prefix=a%2Fb%2F&encoding-type=url")
    assert signed_path("/bkt?prefix=a/b%26c%3Dd%2Be%20f%25gü") == "/bkt?prefix=a%2Fb%26c%3Dd%2Be%20f%25g%C3%BC"
    assert signed_path("/bkt/key?uploads") == "/bkt/key?uploads"
    assert signed_path("/bkt/a/b") == "/bkt/a/b"  # the path itself is left alone
    once = signed_path("/bkt?prefix=a/b/")
    assert signed_path(once) == once
