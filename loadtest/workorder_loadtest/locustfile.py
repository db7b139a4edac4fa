"""What ``locust -f`` loads (workorder-loadtest runs it): the suite's options and listeners, which
register on import, and the user classes, which Locust finds in this module."""

from workorder_loadtest import hooks, options  # noqa: F401 - imported for their listeners
from workorder_loadtest.users.notifications import NotificationUser
from workorder_loadtest.users.roles import MakerUser, OperatorUser, SupervisorUser, WorkOrderUser

__all__ = ["MakerUser", "NotificationUser", "OperatorUser", "SupervisorUser", "WorkOrderUser"]
