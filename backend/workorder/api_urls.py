"""The REST API under /api/ (routers for every domain app)."""

urlpatterns: list = []
