from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    # The front door is the API documentation (nginx redirects / there too in production).
    path("", RedirectView.as_view(url="/api/docs/", permanent=False), name="root"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("workorder.api_urls")),
    path("", include("workorder.core.urls")),
]

handler404 = "workorder.core.exceptions.not_found"
handler500 = "workorder.core.exceptions.server_error"
