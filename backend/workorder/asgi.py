"""ASGI entry point for daphne (`workorder-daphne`): WebSockets under /ws/, HTTP for everything else.

In production nginx sends only /ws/ here; plain HTTP is still served so `daphne workorder.asgi:application`
alone is a complete development server.
"""

import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workorder.settings")

from django.core.exceptions import ImproperlyConfigured  # noqa: E402

try:
    from django.core.asgi import get_asgi_application

    django_asgi_app = get_asgi_application()  # sets up Django before the consumers import models
except ImproperlyConfigured as exc:
    print(f"workorder: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from workorder.notifications.realtime import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
    }
)
