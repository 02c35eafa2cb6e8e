"""/docs: Swagger UI served from the swagger-ui-bundle package, never from a CDN. Not pure.

FastAPI's default /docs page loads Swagger UI's script and style from a public CDN, which a
cluster without internet egress (most GPU clusters) cannot reach: the page would stay blank.
Here the same page is built by FastAPI (`get_swagger_ui_html`) and its assets are served by
this process under ASSETS_PREFIX, which needs no token (the auth middleware opens it, as it
opens /docs and /openapi.json). ReDoc, which has no bundled package, is not served.
"""

from __future__ import annotations

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
ASSETS_PREFIX = "/docs/assets/"


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI for `app` (created with docs_url=None) at /docs, assets included."""
    assets = ASSETS_PREFIX.rstrip("/")
    app.mount(assets, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
              name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            oauth2_redirect_url=f"{DOCS_PATH}/oauth2-redirect")

    @app.get(f"{DOCS_PATH}/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
