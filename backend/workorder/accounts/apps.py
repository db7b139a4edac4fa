from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "workorder.accounts"
    label = "accounts"
