"""``/api/openapi.json`` and the page that shows it, ``/api/docs``, with every file it needs.

The page is Swagger UI, from the files the ``swagger-ui-bundle-v2`` package installs
(no CDN: deployments are often offline), and a few lines of our own that point it
at the document. Only the files named in ``ASSETS`` are served: a path is never
built from what a client sent. Its Content-Security-Policy lets the page load and
call nothing but this host. Public: the document names no secret, and a user
reading it has no key yet.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from swagger_ui_bundle import swagger_ui_path

from api import openapi
from api.responses import ApiError

SWAGGER_UI = Path(str(swagger_ui_path))
# Ours: Swagger UI told where the document is, and never to send it to an online validator.
INITIALIZER = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", window.location.href).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""
# Relative links: the page works under any prefix a proxy puts it behind (/api/docs -> /api/docs/...).
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>smsgw API</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/smsgw-docs.js"></script>
</body>
</html>
"""
# Swagger UI sets inline styles; everything else comes from this host only.
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
          "connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# name -> (file in the package, Content-Type)
ASSETS = {
    "swagger-ui.css": (SWAGGER_UI / "swagger-ui.css", "text/css"),
    "swagger-ui.css.map": (SWAGGER_UI / "swagger-ui.css.map", "application/json"),
    "swagger-ui-bundle.js": (SWAGGER_UI / "swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui-bundle.js.map": (SWAGGER_UI / "swagger-ui-bundle.js.map", "application/json"),
    "favicon-32x32.png": (SWAGGER_UI / "favicon-32x32.png", "image/png"),
}
OWN_ASSETS = {"smsgw-docs.js": (INITIALIZER, "text/javascript")}
REVALIDATE = {"Cache-Control": "no-cache"}  # the ETag answers 304; an upgrade is seen at once


def asset_names() -> list[str]:
    """Every file the page may ask for, as the document lists them."""
    return sorted([*ASSETS, *OWN_ASSETS])


async def openapi_json(request: Request) -> Response:
    """The document, serialised once per process (about 100 KB)."""
    state = request.app.state
    body = getattr(state, "openapi_json", None)
    if body is None:
        body = state.openapi_json = JSONResponse(openapi.document(request.app)).body
    return Response(body, media_type="application/json")


async def docs_page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE, headers={"Content-Security-Policy": POLICY, **REVALIDATE})


async def docs_asset(request: Request) -> Response:
    name = request.path_params["asset"]
    if name in OWN_ASSETS:
        text, media_type = OWN_ASSETS[name]
        return Response(text, media_type=media_type, headers=REVALIDATE)
    if name not in ASSETS:
        raise ApiError(404, "No such file.")
    path, media_type = ASSETS[name]
    return FileResponse(path, media_type=media_type, headers=REVALIDATE)
