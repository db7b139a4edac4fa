"""ASGI entry point for daphne (`workorder-daphne`): WebSockets under /ws/, HTTP for everything else.

In production nginx sends only /ws/ here; plain HTTP is still served so `daphne workorder.asgi:application`
alone is a complete development server.
"""

import os

from workorder.core.env import configuration_errors

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workorder.settings")

with configuration_errors():
    from django.core.asgi import get_asgi_application

    django_asgi_app = get_asgi_application()  # sets up Django before the consumers import models

from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator

from workorder.notifications.consumers import websocket_urlpatterns

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
    }
)
