"""The OpenAPI schema generates without warnings and documents the whole API; / leads to its docs."""

import io

import pytest
import yaml
from django.core.management import call_command

from tests import domain_builders as b

pytestmark = pytest.mark.django_db


def generate_schema() -> dict:
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    return yaml.safe_load(out.getvalue())


def test_schema_generates_without_warnings_and_lists_every_endpoint():
    schema = generate_schema()
    paths = set(schema["paths"])
    expected = {
        "/api/auth/login/", "/api/auth/logout/", "/api/auth/me/",
        "/api/tasks/", "/api/tasks/{id}/", "/api/tasks/{id}/assign/", "/api/tasks/{id}/claim/",
        "/api/tasks/{id}/update_progress/", "/api/tasks/{id}/complete/",
        "/api/workorders/", "/api/workorders/{id}/", "/api/workorders/{id}/approve/", "/api/workorders/{id}/reject/",
        "/api/products/", "/api/customers/", "/api/departments/", "/api/processes/", "/api/users/",
        "/api/notifications/", "/api/notifications/{id}/read/", "/api/notifications/read_all/",
        "/api/statistics/task_summary/", "/api/statistics/department_workload/", "/api/statistics/collaboration/",
    }
    assert expected <= paths
    task_params = {p["name"] for p in schema["paths"]["/api/tasks/"]["get"]["parameters"]}
    assert {"status", "assigned_department", "assigned_operator", "work_order", "process", "ordering", "page",
            "page_size"} <= task_params
    assert set(schema["paths"]["/api/workorders/{id}/"]) >= {"get", "patch"}
    assert "put" not in schema["paths"]["/api/workorders/{id}/"]
    claim = schema["paths"]["/api/tasks/{id}/claim/"]["post"]["responses"]
    assert {"200", "400", "401", "403", "404", "409"} <= set(claim)
    assert claim["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")


def test_schema_and_docs_are_served():
    api = b.client(b.admin())
    assert api.get("/api/schema/").status_code == 200
    assert api.get("/api/docs/").status_code == 200


def test_the_root_redirects_to_the_api_docs():
    response = b.client().get("/")
    assert response.status_code == 302 and response["Location"] == "/api/docs/"
