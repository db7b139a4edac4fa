from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from workorder.core.docs import RedocView, SpectacularSwaggerSplitView

urlpatterns = [
    # The front door is the API documentation (nginx redirects / there too in production).
    path("", RedirectView.as_view(url="/api/docs/", permanent=False), name="root"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Self-hosted Swagger UI and Redoc (drf-spectacular-sidecar), no inline script: core/docs.py.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", RedocView.as_view(url_name="schema"), name="api-redoc"),
    path("api/", include("workorder.api_urls")),
    path("", include("workorder.core.urls")),
]

handler404 = "workorder.core.exceptions.not_found"
handler500 = "workorder.core.exceptions.server_error"
