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

from workorder.core.asgi_hosts import AllowedHostsValidator
from workorder.core.client_address import ClientAddressMiddleware
from workorder.notifications.consumers import websocket_urlpatterns

# A WebSocket handshake needs an allowed Host and an allowed Origin (else HTTP 403), then a route:
# unknown paths under /ws/ are closed with 4404 by the catch-all route (consumers.py). The scope's
# client is the address X-Real-IP names only when a trusted balancer sent it (core/client_address.py).
application = ClientAddressMiddleware(ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsValidator(AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns))),
    }
))
