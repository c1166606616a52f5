"""Keep credentials out of everything we log or print: :func:`redact_url`.

``redact_url("postgresql://cvae:s3cret@db:5432/optuna")`` -> ``"postgresql://cvae:***@db:5432/optuna"``;
secret query values (``password``, ``token``, ``api_key``, ...) and ``password=...`` in free text are masked
too. The user information of a URL is everything between ``scheme://`` and the *last* ``@`` before the
query: SQLAlchemy accepts passwords holding ``/`` and an unencoded ``@``, which :func:`urllib.parse.urlsplit`
and :func:`sqlalchemy.engine.make_url` each split differently, so masking to the last ``@`` covers what
either would send (``http://host:5000/a@b`` becomes ``http://host:***@b``: in doubt, more is masked). A
password holding whitespace cannot be told from the text around it and is not masked.
"""

from __future__ import annotations

import re

MASK = "***"

#: A URL in running text: a scheme, ``://`` and everything up to the next whitespace.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")
#: Key words that make a query or connection-string value a secret (matched inside the key, any case).
SECRET_KEY_PARTS = ("pass", "pwd", "secret", "token", "key", "credential", "signature")
#: ``key=value`` outside URLs (libpq/ODBC connection strings, messages): keys that name a secret.
_SECRET_ASSIGNMENT = re.compile(r"(?<![\w.\-])(?P<key>[\w.\-]*"
                                r"(?:pass(?:word|wd)|pwd|secret|token|api[_-]?key|access[_-]?key)[\w.\-]*)"
                                r"(?P<eq>\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;,)]+)", re.IGNORECASE)


def _is_secret_key(key: str) -> bool:
    key = key.lower()
    return any(part in key for part in SECRET_KEY_PARTS)


def _redact_query(query: str) -> str:
    """``a=1&password=x;token=y`` -> ``a=1&password=***;token=***`` (separators kept as they were)."""
    parts = re.split(r"([&;])", query)
    for i in range(0, len(parts), 2):
        key, eq, value = parts[i].partition("=")
        if eq and value and _is_secret_key(key):
            parts[i] = f"{key}={MASK}"
    return "".join(parts)


def _redact_one(url: str) -> str:
    """One URL (``scheme://...``, possibly followed by punctuation of the text around it), masked."""
    scheme, _, rest = url.partition("://")
    query_at = rest.find("?")
    head, query = (rest, "") if query_at < 0 else (rest[:query_at], rest[query_at:])
    at = head.rfind("@")
    if at < 0 and query:  # a '?' inside a password: look for the '@' in the whole rest
        at = rest.rfind("@")
        if at >= 0 and ":" in rest[:at]:
            head, query = rest, ""
        else:
            at = -1
    if at >= 0:
        userinfo = head[:at]
        user, colon, password = userinfo.partition(":")
        if colon and password:
            head = f"{user}:{MASK}{head[at:]}"
    if query:
        query = "?" + _redact_query(query[1:])
    return f"{scheme}://{head}{query}"


def redact_url(text: str | None) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URL in it masked, secret
    query values masked, and ``password=...``-style values in the rest of the text masked ("" for None)."""
    if not text:
        return ""
    pieces = []
    last = 0
    for match in _URL.finditer(text):
        pieces.append(_SECRET_ASSIGNMENT.sub(_mask_assignment, text[last:match.start()]))
        pieces.append(_redact_one(match.group()))
        last = match.end()
    pieces.append(_SECRET_ASSIGNMENT.sub(_mask_assignment, text[last:]))
    return "".join(pieces)


def _mask_assignment(match: re.Match) -> str:
    return f"{match['key']}{match['eq']}{MASK}"
