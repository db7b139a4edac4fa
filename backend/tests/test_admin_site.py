"""/admin/ has every domain model registered and its pages render."""

import pytest
from django.apps import apps
from django.contrib import admin
from django.test import Client

from tests import domain_builders as b

pytestmark = pytest.mark.django_db

DOMAIN_APPS = ("catalog", "accounts", "production", "notifications")


def test_every_domain_model_is_registered_in_admin():
    for label in DOMAIN_APPS:
        for model in apps.get_app_config(label).get_models():
            assert admin.site.is_registered(model), model


def test_admin_changelists_and_change_pages_render():
    shop = b.Shop()
    wo = shop.approved()
    client = Client()
    client.force_login(shop.admin)
    for label in DOMAIN_APPS:
        for model in apps.get_app_config(label).get_models():
            opts = model._meta
            assert client.get(f"/admin/{opts.app_label}/{opts.model_name}/").status_code == 200, opts.label
            assert client.get(f"/admin/{opts.app_label}/{opts.model_name}/add/").status_code == 200, opts.label
    assert client.get(f"/admin/production/workorder/{wo.pk}/change/").status_code == 200
    task = wo.tasks.first()
    assert client.get(f"/admin/production/task/{task.pk}/change/").status_code == 200
