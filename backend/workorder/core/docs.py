"""The API documentation pages, self-hosted: Swagger UI and Redoc come from drf-spectacular-sidecar's
static files (SPECTACULAR_SETTINGS *_DIST = "SIDECAR"), never from a CDN, and run without inline
scripts under core/edge.py's Content-Security-Policy.

- /api/docs/: SpectacularSwaggerSplitView, which serves its init script as a file (/api/docs/?script=).
- /api/redoc/: drf-spectacular's Redoc template has an inline init script and loads Google Fonts;
  this page is the same without either: Redoc reads the schema URL from the <redoc> element.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.utils.html import format_html
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerSplitView

__all__ = ["RedocView", "SpectacularSwaggerSplitView"]

REDOC_PAGE = """<!DOCTYPE html>
<html>
  <head>
    <title>{title}</title>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
  </head>
  <body>
    <redoc spec-url="{schema_url}"></redoc>
    <script src="{redoc_js}"></script>
  </body>
</html>
"""


class RedocView(SpectacularRedocView):
    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        from drf_spectacular.settings import spectacular_settings

        page = format_html(REDOC_PAGE, title=self.title or spectacular_settings.TITLE,
                           schema_url=self._get_schema_url(request), redoc_js=self._redoc_standalone())
        return HttpResponse(page, content_type="text/html; charset=utf-8")
