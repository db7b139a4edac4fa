"""Small builders for domain tests (no fixtures magic): departments, routings, users, orders, clients."""

from __future__ import annotations

import datetime as dt
import itertools

from rest_framework.test import APIClient

from workorder.accounts.models import Role, User
from workorder.accounts.tokens import authenticate_key, issue_token
from workorder.catalog.models import Customer, Department, Process, Product, RoutingStep
from workorder.production import services
from workorder.production.models import WorkOrder

_counter = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}"


def department(name: str | None = None) -> Department:
    name = name or unique("Dept")
    return Department.objects.create(name=name, code=name.lower())


def process(dept: Department, name: str | None = None) -> Process:
    return Process.objects.create(name=name or unique(f"{dept.name}-proc"), department=dept)


def product_with_routing(*departments: Department) -> Product:
    """A product whose routing visits the departments in the given order (one process each)."""
    product = Product.objects.create(sku=unique("SKU"), name=unique("Product"))
    for n, dept in enumerate(departments, start=1):
        RoutingStep.objects.create(product=product, process=process(dept), sequence=n * 10)
    return product


def customer() -> Customer:
    return Customer.objects.create(name=unique("Customer"))


def user(role: str = "", dept: Department | None = None, username: str | None = None, **extra) -> User:
    u = User.objects.create_user(username=username or unique(role or "user"), password="pw-123456", role=role,
                                 department=dept, **extra)
    return u


def operator(dept: Department, **kw) -> User:
    return user(Role.OPERATOR, dept, **kw)


def supervisor(dept: Department, **kw) -> User:
    return user(Role.SUPERVISOR, dept, **kw)


def maker(**kw) -> User:
    return user(Role.MAKER, **kw)


def admin(**kw) -> User:
    return user("", None, is_staff=True, is_superuser=True, **kw)


_keys: dict[int, str] = {}


def client(for_user: User | None = None) -> APIClient:
    """An API client signed in as `for_user`. Clients of one user share one token while it is valid (as
    one device would): a user holds at most WORKORDER_TOKENS_PER_USER tokens."""
    api = APIClient()
    if for_user is not None:
        key = _keys.get(for_user.pk)
        found = authenticate_key(key, touch=False) if key else None
        if found is None or found[0].pk != for_user.pk:
            _, key = issue_token(for_user)
            _keys[for_user.pk] = key
        api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return api


def work_order(created_by: User, product: Product, quantity: int = 10, priority: str = "normal",
               cust: Customer | None = None) -> WorkOrder:
    return services.create_work_order(created_by, customer=cust or customer(), product=product,
                                      production_quantity=quantity,
                                      delivery_date=dt.date.today() + dt.timedelta(days=14), priority=priority)


def approved_work_order(created_by: User, product: Product, approver: User, quantity: int = 10) -> WorkOrder:
    wo = work_order(created_by, product, quantity)
    services.approve_work_order(approver, wo.pk)
    wo.refresh_from_db()
    return wo


class Shop:
    """Two departments (cutting -> welding), one operator pair and supervisor each, a maker, an admin,
    and a product routed cutting -> welding."""

    def __init__(self):
        self.cutting = department(unique("Cutting"))
        self.welding = department(unique("Welding"))
        self.cut_op = operator(self.cutting)
        self.cut_op2 = operator(self.cutting)
        self.weld_op = operator(self.welding)
        self.cut_sup = supervisor(self.cutting)
        self.weld_sup = supervisor(self.welding)
        self.maker = maker()
        self.other_maker = maker()
        self.admin = admin()
        self.product = product_with_routing(self.cutting, self.welding)

    def approved(self, quantity: int = 10) -> WorkOrder:
        return approved_work_order(self.maker, self.product, self.cut_sup, quantity)

    def tasks(self, wo: WorkOrder):
        first, second = list(wo.tasks.order_by("sequence"))
        return first, second

    def long_order(self, steps: int) -> WorkOrder:
        """An approved work order with `steps` tasks, all in cutting (one bulk INSERT of tasks)."""
        return approved_work_order(self.maker, product_with_routing(*[self.cutting] * steps), self.cut_sup)
