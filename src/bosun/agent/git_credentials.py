"""Repository URLs and the credentials git is given for them.

clearml.conf's ``agent.git_user`` / ``git_pass`` (for the hosts in ``git_host``, or all), or a
user:token written into a task's repository URL, reach git through a credential helper that
reads them from its environment: never through a command line (``ps`` and ``/proc/*/cmdline``
show those to every local user), never in a URL that git writes down. The helper is scoped to
the repository's scheme and host, so a submodule on another host gets nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
# scp-like ssh syntax: [user@]host:path (a colon before any slash; not "C:\..." style).
SCP = re.compile(r"^(?:(?P<user>[^@/:\s]+)@)?(?P<host>[^@/:\s]{2,}):(?P<path>(?!//).*)$")

USER_VARIABLE = "BOSUN_GIT_USERNAME"
PASSWORD_VARIABLE = "BOSUN_GIT_PASSWORD"
# git runs it as `sh -c '<helper> get'`; the values come from the environment, not from here.
_HELPER = (f'!f() {{ test "$1" = get || exit 0; printf "username=%s\\npassword=%s\\n" '
           f'"${USER_VARIABLE}" "${PASSWORD_VARIABLE}"; }}; f')


def is_local(repository: str) -> bool:
    """A filesystem path (not a URL and not ``host:path`` ssh syntax)."""
    return not URL.match(repository) and not SCP.match(repository)


def is_http(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


def _hostport(host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


def strip_credentials(url: str) -> str:
    """``https://user:pass@host/x`` -> ``https://host/x``; other URLs (ssh keeps its user) and
    paths unchanged."""
    if not is_http(url):
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_credentials(url: str) -> tuple[str, str] | None:
    """(user, password) written into an http(s) URL; a lone user is a token (GitHub and GitLab
    take it as the password of any user name)."""
    if not is_http(url):
        return None
    userinfo = urlsplit(url).netloc.rpartition("@")[0]
    if not userinfo:
        return None
    user, sep, password = (unquote(p) for p in userinfo.partition(":"))
    if sep and password:
        return user, password
    return "oauth2", user


def url_secrets(url: str) -> list[str]:
    """What must be masked of an http(s) URL's credentials: the password (or lone token), in
    its written and decoded forms."""
    if not is_http(url):
        return []
    userinfo = urlsplit(url).netloc.rpartition("@")[0]
    if not userinfo:
        return []
    user, sep, password = userinfo.partition(":")
    secret = password if sep and password else user
    return [secret, unquote(secret)]


def to_https(url: str) -> str | None:
    """The https form of an http(s) or ssh URL (None for other schemes)."""
    if is_http(url):
        return url
    scp = None if URL.match(url) else SCP.match(url)
    if scp:
        return f"https://{scp.group('host')}/{scp.group('path').lstrip('/')}"
    if url.lower().startswith(("ssh://", "git+ssh://", "ssh+git://")):
        parts = urlsplit(url)
        if not parts.hostname:
            return None
        return urlunsplit(("https", _hostport(parts.hostname, None), parts.path, "", ""))
    return None


def host_of(url: str) -> str:
    if URL.match(url):
        return (urlsplit(url).hostname or "").lower()
    scp = SCP.match(url)
    return scp.group("host").lower() if scp else ""


@dataclass(frozen=True)
class GitAuth:
    """User and password for one scheme://host[:port]: the `-c` options and environment that
    hand them to git through the credential helper."""

    origin: str  # e.g. https://github.com or http://127.0.0.1:8080
    user: str
    password: str

    def config(self) -> list[str]:
        return ["-c", f"credential.{self.origin}.helper={_HELPER}"]

    def environment(self) -> dict[str, str]:
        return {USER_VARIABLE: self.user, PASSWORD_VARIABLE: self.password}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.rpartition('@')[2].lower()}"


@dataclass
class GitCredentials:
    """clearml.conf ``agent.git_user`` / ``git_pass`` / ``git_host`` /
    ``force_git_ssh_protocol`` / ``force_git_ssh_port`` / ``force_git_ssh_user``."""

    user: str = ""
    password: str = ""
    host: str = ""
    force_ssh: bool = False
    ssh_port: int = 0
    ssh_user: str = ""
    translate_ssh: bool = True

    def applies_to(self, hostname: str) -> bool:
        """Whether user/pass are sent to ``hostname`` (always, unless ``host`` limits them)."""
        wanted = {host_of(h) or h.lower() for h in (p.strip() for p in self.host.split(","))
                  if h}
        return not wanted or hostname.lower() in wanted

    @property
    def has_user_pass(self) -> bool:
        return bool(self.user and self.password)

    def fetch_url(self, repository: str) -> str:
        """The URL git is given for ``repository``, always without credentials: ssh links are
        turned into https when user/pass apply (as the ClearML agent does); without user/pass
        and with ``force_ssh``, https links are turned into ssh ones."""
        if is_local(repository):
            return repository
        if self._uses_user_pass(repository):
            https = to_https(repository)
            assert https is not None
            return strip_credentials(https)
        if self.force_ssh and is_http(repository) and not url_secrets(repository):
            return self.to_ssh(repository)
        return strip_credentials(repository)

    def auth_for(self, repository: str) -> GitAuth | None:
        """What git is given to log in to ``repository``'s host: the task URL's own user:token,
        else clearml.conf's user/pass where they apply; None for ssh and local paths."""
        if is_local(repository):
            return None
        embedded = url_credentials(repository)
        if embedded is not None:
            return GitAuth(_origin(repository), *embedded)
        if self._uses_user_pass(repository):
            https = to_https(repository)
            assert https is not None
            return GitAuth(_origin(https), self.user, self.password)
        return None

    def _uses_user_pass(self, repository: str) -> bool:
        if not self.has_user_pass or url_credentials(repository) is not None:
            return False
        if not self.translate_ssh and not is_http(repository):
            return False  # translate_ssh: false keeps ssh links as they are
        https = to_https(repository)
        return https is not None and self.applies_to(host_of(https))

    def to_ssh(self, url: str) -> str:
        """``https://host/org/repo.git`` -> ``git@host:org/repo.git`` (or
        ``ssh://user@host:port/org/repo.git`` when a port is forced)."""
        parts = urlsplit(url)
        user = self.ssh_user or "git"
        path = parts.path.lstrip("/")
        host = parts.hostname or ""
        if self.ssh_port:
            return f"ssh://{user}@{_hostport(host, self.ssh_port)}/{path}"
        return f"{user}@{host}:{path}"

    def submodule_rewrites(self, host: str) -> list[tuple[str, str]]:
        """insteadOf rules giving submodules on the repository's host the same way in as the
        repository itself (https where user/pass apply, or the forced ssh); no credentials."""
        if not host:
            return []
        if self.has_user_pass and self.applies_to(host):
            return [(f"https://{host}/", f"git@{host}:")]
        if self.force_ssh and not self.has_user_pass:
            user = self.ssh_user or "git"
            if self.ssh_port:
                return [(f"ssh://{user}@{_hostport(host, self.ssh_port)}/", f"https://{host}/")]
            return [(f"{user}@{host}:", f"https://{host}/")]
        return []
