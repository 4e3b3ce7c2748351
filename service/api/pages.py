"""The web page: index.html at / and its files at /static/, served from the installed package."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# The folder is flat and fixed at install time, so the names served are known up front and a
# request can never reach a file outside it.
FILES = frozenset(path.name for path in STATIC_DIR.iterdir() if path.suffix in CONTENT_TYPES)

# Names stay the same across releases, so browsers revalidate every time (a cheap 304 thanks to
# ETag and Last-Modified) rather than run a stale script against a newer API.
CACHE_CONTROL = "no-cache"

# Everything the page needs comes from this server; inline script is never needed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'none'"
)


def file_response(name: str) -> web.FileResponse:
    path = STATIC_DIR / name
    headers = {
        "Content-Type": CONTENT_TYPES[path.suffix],
        "Cache-Control": CACHE_CONTROL,
        "X-Content-Type-Options": "nosniff",
    }
    return web.FileResponse(path, headers=headers)


async def index(request: web.Request) -> web.FileResponse:
    response = file_response("index.html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


async def static_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in FILES:
        raise web.HTTPNotFound()
    return file_response(name)
