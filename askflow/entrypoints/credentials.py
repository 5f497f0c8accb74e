"""Who is calling the HTTP API, and so what they may see: API keys, the web page's session cookie, and the identity
Identity-Aware Proxy signed.

- ``ASKFLOW_API_KEY``: the deployment's admin key (every audience, the admin pages).
- ``ASKFLOW_API_KEYS``: more keys, each bound to audiences and an admin flag (``ApiKey``).
- The web page's session cookie (set when a key is configured): the asking API as an anonymous asker (``public``),
  never the admin pages.
- The admin sign-in cookie (``/admin/login``, with the admin key or an admin ``ASKFLOW_API_KEYS`` key): the admin
  pages in a browser, for ``ADMIN_SESSION_S``. A form it sends (a reviewer's approval) also carries a token tied to
  the reviewer and the day (``csrf_token``), and must come from the page's own origin: no other site can make a
  signed-in reviewer approve anything.
- Behind IAP (``ASKFLOW_IAP_AUDIENCE`` set): the signed ``x-goog-iap-jwt-assertion``, verified with google-auth
  against IAP's keys (``ASKFLOW_IAP_CERTS_URL``, cached for ``CERTS_TTL_S``), maps to audiences by
  ``ASKFLOW_IAP_AUDIENCE_RULES`` (an e-mail address; ``@domain``: an account of that Google Workspace domain, its
  ``hd`` claim; ``group:NAME@DOMAIN``: a member of that Google group, nested groups included, as the group directory
  says: IAP's token names no group) and to admin by ``ASKFLOW_IAP_ADMINS``. A group the directory cannot answer for
  (an error, a time-out) admits no one, and the other rules still count. A header
  IAP did not sign — a bare ``x-goog-authenticated-user-email``, a forged or expired token — counts for nothing.
- Anyone else: ``public`` when no key is configured, and nothing at all otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from askflow.domain.audiences import PUBLIC_VIEWER, Viewer
from askflow.domain.errors import ConfigurationError, DirectoryUnavailable

if TYPE_CHECKING:
    from askflow.ports import GroupDirectory

log = logging.getLogger(__name__)
SESSION_COOKIE, SESSION_S = "askflow_session", 12 * 3600  # the web page's session when an API key is set
ADMIN_COOKIE, ADMIN_SESSION_S = "askflow_admin", 8 * 3600  # a reviewer signed in with an admin key
IAP_HEADER = "x-goog-iap-jwt-assertion"
IAP_ISSUER = "https://cloud.google.com/iap"
# what a rule may be looked up by: an ASCII address, one "@", a local part and a domain (never "@domain" or
# "group:..." as a signed e-mail claim, nor a character that lower-cases into another address's, like the Kelvin sign)
ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
CERTS_TTL_S = 300


@dataclass(frozen=True)
class Caller:
    """What a request may do: ``may_ask`` (the asking API), as ``viewer`` (``viewer.admin``: the admin pages too)."""

    viewer: Viewer
    may_ask: bool
    via: str  # "key", "iap", "admin-session", "session", "anonymous" or "none"
    name: str = ""  # who, as a reviewer's decision records it: the key's name, the IAP e-mail

    @property
    def ambient(self) -> bool:
        """Its credential is one a browser sends by itself (a cookie, IAP's): a form it posts needs ``csrf_token``."""
        return self.via in ("iap", "admin-session", "session", "anonymous")


NOBODY = Caller(viewer=PUBLIC_VIEWER, may_ask=False, via="none")


def caller(request, settings, *, groups: Callable[[], GroupDirectory | None] | None = None) -> Caller:
    """The strongest credential the request carries; a wrong key is no credential (and not a fall-back to the
    cookie). ``groups`` gives the group directory the ``group:`` IAP rules ask (called only when an IAP identity
    meets such a rule; ``None``: those rules admit no one)."""
    sent = request.headers.get("X-API-Key")
    if sent:
        return keyed(sent, settings) or NOBODY
    iap = request.headers.get(IAP_HEADER)
    if iap and settings.iap_audience:
        identity = _iap_identity(iap, settings, groups)
        if identity is not None:
            return identity
    admin = _admin_session(request.cookies.get(ADMIN_COOKIE, ""), settings)
    if admin is not None:
        return admin
    if not keys_configured(settings):
        return Caller(viewer=PUBLIC_VIEWER, may_ask=True, via="anonymous")
    if _valid_session(request.cookies.get(SESSION_COOKIE, ""), settings):
        return Caller(viewer=PUBLIC_VIEWER, may_ask=True, via="session")
    return NOBODY


def keys_configured(settings) -> bool:
    return settings.api_key is not None or bool(settings.api_keys)


def keyed(sent: str, settings) -> Caller | None:
    """The caller a key names, or ``None`` for a key that is not configured."""
    admin_key = settings.api_key
    if admin_key is not None and hmac.compare_digest(sent.encode(), admin_key.get_secret_value().encode()):
        return Caller(viewer=Viewer.of(admin=True), may_ask=True, via="key", name="admin")
    for key in settings.api_keys:
        if hmac.compare_digest(sent.encode(), key.key.get_secret_value().encode()):
            return Caller(viewer=Viewer.of(key.audiences, admin=key.admin), may_ask=True, via="key", name=key.name)
    return None


def admin_cookie(request, settings, name: str) -> str:
    """The admin sign-in cookie for the admin key named ``name``: HttpOnly, SameSite=Strict, for the admin function's
    whole origin (its review queue, ``/insights`` and the ``/answers/{id}`` pages it links to)."""
    issued = str(int(time.time()))
    value = f"{issued}.{name}"
    secure = request.scheme == "https" or request.headers.get("X-Forwarded-Proto") == "https"
    return (f"{ADMIN_COOKIE}={value}.{_admin_sign('admin:' + value, settings)}; Max-Age={ADMIN_SESSION_S}; "
            f"Path=/; HttpOnly; SameSite=Strict{'; Secure' if secure else ''}")


def _admin_session(cookie: str, settings) -> Caller | None:
    value, _, signature = cookie.rpartition(".")
    issued, _, name = value.partition(".")
    if not issued.isdigit() or not name or not keys_configured(settings):
        return None
    expected = _admin_sign("admin:" + value, settings)
    if not expected or not hmac.compare_digest(signature.encode(), expected.encode()):
        return None
    if not 0 <= time.time() - int(issued) <= ADMIN_SESSION_S:
        return None
    admins = {"admin"} if settings.api_key is not None else set()
    admins |= {key.name for key in settings.api_keys if key.admin}
    if name not in admins:  # a key no longer an admin's signs nobody in
        return None
    return Caller(viewer=Viewer.of(admin=True), may_ask=True, via="admin-session", name=name)


def csrf_token(caller: Caller, settings, *, day: int | None = None) -> str:
    """What a form of the admin pages carries: tied to the reviewer and the UTC day (empty when no admin key and no
    ``ASKFLOW_ADMIN_SECRET`` is configured to sign it with)."""
    day = int(time.time() // 86_400) if day is None else day
    return _admin_sign(f"csrf:{caller.via}:{caller.name}:{day}", settings)


def csrf_ok(request, caller: Caller, settings, sent: str) -> bool:
    """A form's token is today's or yesterday's for this caller, and the form came from this origin (the browser's
    ``Sec-Fetch-Site``, or ``Origin``, when it sends them)."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin and urlsplit(origin).netloc != request.host:
        return False
    if not sent or not _admin_sign("", settings):
        return False
    today = int(time.time() // 86_400)
    return any(hmac.compare_digest(sent.encode(), csrf_token(caller, settings, day=day).encode())
               for day in (today, today - 1))


class _Certs:
    """IAP's public keys, fetched with google-auth's transport and kept ``CERTS_TTL_S``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[float, dict]] = {}

    def get(self, url: str) -> dict:
        with self._lock:
            fetched = self._cached.get(url)
            if fetched is not None and time.monotonic() - fetched[0] < CERTS_TTL_S:
                return fetched[1]
        import google.auth.transport.requests

        response = google.auth.transport.requests.Request()(url=url, method="GET", timeout=5)
        if response.status != 200:
            raise ValueError(f"IAP keys: HTTP {response.status}")
        certs = json.loads(response.data)
        with self._lock:
            self._cached[url] = (time.monotonic(), certs)
        return certs


_CERTS = _Certs()


def _iap_identity(token: str, settings, groups: Callable[[], GroupDirectory | None] | None) -> Caller | None:
    """The caller IAP vouches for, or ``None`` when the token does not verify (logged, never trusted)."""
    from google.auth import exceptions, jwt

    try:
        claims = jwt.decode(token, certs=_CERTS.get(settings.iap_certs_url), audience=settings.iap_audience)
    except (exceptions.GoogleAuthError, ValueError, KeyError) as error:
        log.warning("an IAP assertion that does not verify was ignored: %s", error)
        return None
    email = str(claims.get("email", ""))
    if claims.get("iss") != IAP_ISSUER or not email:
        log.warning("an IAP assertion from %r without an e-mail was ignored", claims.get("iss"))
        return None
    if not ADDRESS.fullmatch(email):  # no rule is looked up by what is not a plain address
        log.warning("the IAP identity %r is no plain e-mail address: no rule counts for it", email)
        return Caller(viewer=PUBLIC_VIEWER, may_ask=True, via="iap", name=email)
    email = email.lower()
    rules = {rule.lower(): audiences for rule, audiences in settings.iap_audience_rules.items()}
    # a domain rule is the organisation's: the token's hosted domain (``hd``, set only for an account of a Google
    # Workspace or Cloud Identity domain) must be that domain; a consumer account may have any address as its e-mail
    hosted = str(claims.get("hd", "")).lower()
    domain = f"@{hosted}" if hosted and email.endswith(f"@{hosted}") else None
    audiences = [*(rules.get(domain, []) if domain else []), *rules.get(email, [])]
    audiences += _group_audiences(email, settings.iap_group_rules, groups, known=set(audiences))
    admin = email in {admin.lower() for admin in settings.iap_admins}
    return Caller(viewer=Viewer.of(audiences, admin=admin), may_ask=True, via="iap", name=email)


def _group_audiences(email: str, rules: dict[str, list[str]], groups: Callable[[], GroupDirectory | None] | None,
                     *, known: set[str]) -> list[str]:
    """The audiences of the group rules ``email`` is a member of; a group whose rule gives nothing beyond ``known``
    is not asked about. A group the directory cannot answer for admits no one (logged)."""
    known = set(known)
    asked = {group: audiences for group, audiences in rules.items() if not set(audiences) <= known}
    if not asked:
        return []
    try:
        directory = groups() if groups is not None else None
    except ConfigurationError as error:
        log.warning("the IAP group rules admit no one: %s", error)
        return []
    if directory is None:
        log.warning("the IAP group rules admit no one: this entry point has no group directory")
        return []
    found: list[str] = []
    for group, audiences in asked.items():
        if set(audiences) <= known:  # another group gave them already
            continue
        try:
            if directory.is_member(group, email):
                found.extend(audiences)
                known |= set(audiences)
        except DirectoryUnavailable as error:
            log.warning("the IAP rule group:%s admits no one for now: %s", group, error)
    return found


def session_cookie(request, settings) -> str:
    """The web page's same-origin session, for deployments with an API key: the page is public, so whoever loads it
    may ask through it, for ``SESSION_S``, as an anonymous asker; other callers need a key. HttpOnly (no script
    reads it) and SameSite=Strict (no other site's page sends it); Secure over HTTPS."""
    issued = str(int(time.time()))
    secure = request.scheme == "https" or request.headers.get("X-Forwarded-Proto") == "https"
    return (f"{SESSION_COOKIE}={issued}.{_sign(issued, settings)}; Max-Age={SESSION_S}; Path=/; HttpOnly; "
            f"SameSite=Strict{'; Secure' if secure else ''}")


def _valid_session(cookie: str, settings) -> bool:
    issued, _, signature = cookie.partition(".")
    if not issued.isdigit() or not hmac.compare_digest(signature.encode(), _sign(issued, settings).encode()):
        return False
    return 0 <= time.time() - int(issued) <= SESSION_S


def _admin_sign(message: str, settings) -> str:
    """An HMAC of ``message`` under the admin secrets alone (the admin key, every admin ``ASKFLOW_API_KEYS`` key and
    ``ASKFLOW_ADMIN_SECRET``, what an IAP-only deployment has): a holder of any other key can forge no admin cookie
    and no form token. Empty when there is none of them."""
    secrets = [settings.api_key] if settings.api_key is not None else []
    secrets += [key.key for key in settings.api_keys if key.admin]
    secrets += [settings.admin_secret] if settings.admin_secret is not None else []
    if not secrets:
        return ""
    key = b"\x00".join(secret.get_secret_value().encode() for secret in secrets)
    return hmac.new(key, f"askflow-admin:{message}".encode(), hashlib.sha256).hexdigest()


def _sign(issued: str, settings) -> str:
    secret = settings.api_key or (settings.api_keys[0].key if settings.api_keys else None)
    key = secret.get_secret_value().encode() if secret is not None else b""
    return hmac.new(key, f"askflow-session:{issued}".encode(), hashlib.sha256).hexdigest()
