"""What guards a browser's user: cross-site writes refused, and protective headers on every answer.

The API reads any body as JSON whatever its Content-Type, so that `curl -d` works. That also
lets a page on another site send a CORS "simple" POST (text/plain, no preflight) with the
user's browser; browsers say where such a request comes from, and it is refused.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from service.errors import CrossSite

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Another site, or a sibling of ours (another origin all the same).
FOREIGN_FETCH_SITES = frozenset({"cross-site", "same-site"})

# Answers that are not pages load nothing, and no answer may be framed by another site.
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def is_cross_site(request: web.Request) -> bool:
    """Whether a browser marked this request as sent from a page of another origin. curl and
    other programs send neither header, and are not refused."""
    if request.headers.get("Sec-Fetch-Site", "").lower() in FOREIGN_FETCH_SITES:
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    # Scheme aside: behind a TLS proxy the page is https while this server sees http.
    _, _, authority = origin.partition("://")
    return not authority or authority.lower() != request.host.lower()


@web.middleware
async def cross_site_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in STATE_CHANGING and is_cross_site(request):
        raise CrossSite(
            f"a {request.method} sent by a page of another site is refused;"
            " use this server's own page, or a client that is not a browser"
        )
    return await handler(request)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer; a page sets the Content-Security-Policy it needs itself."""
    response.headers.update(HEADERS)
    response.headers.setdefault("Content-Security-Policy", DEFAULT_CSP)
