"""Keeping secrets (git passwords, tokens, URL credentials) out of everything the agent logs."""

from __future__ import annotations

import re
import threading
from urllib.parse import quote

MASK = "****"
MIN_SECRET_LENGTH = 3

# scheme://USERINFO@ : userinfo runs up to the last "@" before the host, never across "/",
# whitespace or quotes (so "a://b/c@d" and two URLs on one line are left alone).
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@'\"<>]+@")


def mask_url(url: str) -> str:
    """Replace the userinfo of every URL in ``url`` (any text): ``https://u:p@h/x`` ->
    ``https://****@h/x``; ``ssh://git@h/x`` -> ``ssh://****@h/x``. Text without URLs is
    returned unchanged."""
    if "://" not in url:
        return url
    return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", url)


class SecretMasker:
    """The secrets one agent knows of; ``mask`` hides all of them (and URL credentials) in a
    text. Thread-safe: log lines are masked from several threads."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self._secrets: set[str] = set()
        self._ordered: list[str] = []
        self._lock = threading.Lock()
        for secret in secrets or []:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Remember ``secret`` (and its URL-encoded form); empty or shorter than three
        characters is ignored (masking "a" everywhere would ruin every line)."""
        if not secret:
            return
        forms = {secret, quote(secret, safe=""), quote(secret)}
        with self._lock:
            for form in forms:
                if len(form) >= MIN_SECRET_LENGTH and form not in self._secrets:
                    self._secrets.add(form)
            # Longest first, so a secret containing another one is masked whole.
            self._ordered = sorted(self._secrets, key=len, reverse=True)

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(self._secrets)

    def mask(self, text: str) -> str:
        """``text`` with every known secret replaced by ``****`` and URL userinfo masked."""
        if not text:
            return text
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, MASK)
        return mask_url(text)
