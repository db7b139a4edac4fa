"""The REST API under /api/ (routers for every domain app)."""

from django.http import JsonResponse
from django.urls import include, path, re_path
from rest_framework.routers import DefaultRouter

from workorder.accounts.views import LoginView, LogoutView, MeView, UserViewSet
from workorder.catalog.views import CustomerViewSet, DepartmentViewSet, ProcessViewSet, ProductViewSet
from workorder.notifications.views import NotificationViewSet
from workorder.production.views import TaskViewSet, WorkOrderViewSet
from workorder.statistics.views import CollaborationView, DepartmentWorkloadView, TaskSummaryView


def api_not_found(request, *args, **kwargs):
    """Unknown paths under /api/ answer with the JSON error shape, not Django's HTML page."""
    return JsonResponse({"detail": "Not found.", "code": "not_found", "errors": {}}, status=404)


router = DefaultRouter()
router.include_root_view = False
router.register("tasks", TaskViewSet, basename="task")
router.register("workorders", WorkOrderViewSet, basename="workorder")
router.register("products", ProductViewSet, basename="product")
router.register("customers", CustomerViewSet, basename="customer")
router.register("departments", DepartmentViewSet, basename="department")
router.register("processes", ProcessViewSet, basename="process")
router.register("users", UserViewSet, basename="user")
router.register("notifications", NotificationViewSet, basename="notification")

urlpatterns = [
    path("auth/login/", LoginView.as_view(), name="auth-login"),
    path("auth/logout/", LogoutView.as_view(), name="auth-logout"),
    path("auth/me/", MeView.as_view(), name="auth-me"),
    path("statistics/task_summary/", TaskSummaryView.as_view(), name="statistics-task-summary"),
    path("statistics/department_workload/", DepartmentWorkloadView.as_view(), name="statistics-department-workload"),
    path("statistics/collaboration/", CollaborationView.as_view(), name="statistics-collaboration"),
    path("", include(router.urls)),
    # Last: unmatched paths ending in "/" (others first get APPEND_SLASH's redirect).
    re_path(r"^(?:.*/)?$", api_not_found),
]
