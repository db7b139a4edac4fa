"""The filter backend skips building a FilterSet only when the request names none of its filters."""

import pytest

from tests import domain_builders as b
from workorder.core import filtering
from workorder.production.filters import TaskFilter

pytestmark = pytest.mark.django_db


def test_a_filterset_is_built_only_when_a_filter_parameter_is_present(monkeypatch):
    built = []
    original = TaskFilter.__init__
    monkeypatch.setattr(TaskFilter, "__init__", lambda self, *a, **k: built.append(1) or original(self, *a, **k))
    shop = b.Shop()
    shop.approved()
    api = b.client(shop.admin)
    assert api.get("/api/tasks/?page=1&page_size=5&ordering=-id").status_code == 200
    assert built == []
    assert api.get("/api/tasks/?status=pending").json()["count"] == 2
    assert built == [1]
    assert api.get("/api/tasks/?status=bogus").status_code == 400  # still validated
    assert api.get("/api/tasks/?status=completed").json()["count"] == 0


def test_suffixed_parameters_count_as_filters():
    assert filtering._mentions_a_filter({"created_after": "x"}, {"created": None})
    assert filtering._mentions_a_filter({"status": "x"}, {"status": None})
    assert not filtering._mentions_a_filter({"page": "2", "ordering": "id"}, {"status": None})
