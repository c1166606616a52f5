"""Keep credentials out of everything we log or print.

``redact_url("postgresql://cvae:s3cret@db:5432/optuna")`` -> ``"postgresql://cvae:***@db:5432/optuna"``.
Query parameters that look like secrets (password, token, key, secret) are masked too.
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")
_SECRET_QUERY = re.compile(r"(?P<key>[?&;](?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key)=)[^&;#\s]*",
                           re.IGNORECASE)
MASK = "***"


def redact_url(text: str) -> str:
    """Mask the password of every ``scheme://user:password@host`` URL and secret query values in ``text``."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}{MASK}", text)
