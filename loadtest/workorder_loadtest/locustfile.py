"""Locust entry point of the workorder load test (``locust -f`` this file, or use workorder-loadtest).

User classes: WorkOrderUser, SupervisorUser, OperatorUser, MakerUser (weights 1:1:1:1, as in the
original plan) and NotificationUser (WebSocket, a fixed number set by --ws-users).
"""

from locust import events

from workorder_loadtest import hooks
from workorder_loadtest.users import (  # noqa: F401 - Locust discovers the classes in this module
    MakerUser,
    NotificationUser,
    OperatorUser,
    SupervisorUser,
    WorkOrderUser,
)

hooks.install(events)
