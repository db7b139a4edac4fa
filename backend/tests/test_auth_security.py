"""Authentication hardening: login lockout (API and admin), password hashing (Argon2id, upgrade from
PBKDF2, the per-process hashing cap), API tokens with lifetimes, who is an admin, and self-approval.

Client addresses are simulated the way nginx passes them: X-Real-IP from a trusted (loopback) peer,
which is what Django's test client is (REMOTE_ADDR 127.0.0.1).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
import logging
import threading

import pytest
from django.contrib.auth.hashers import check_password, identify_hasher, make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.management import call_command
from django.db import connection
from django.test import Client

from tests import domain_builders as b
from workorder.accounts import hashers, lockout
from workorder.accounts.models import AuthToken, Role, User
from workorder.accounts.signals import tokens_revoked
from workorder.accounts.tokens import authenticate_key, issue_token, revoke_all
from workorder.core.client_address import client_address
from workorder.core.errors import PermissionDenied
from workorder.production import services

pytestmark = pytest.mark.django_db

PASSWORD = "pw-123456"  # domain_builders' password for every user
ATTACKER = "198.51.100.7"
OFFICE = "203.0.113.20"
LOGIN = "/api/auth/login/"


def api_login(username: str, password: str, address: str, **headers):
    return b.client().post(LOGIN, {"username": username, "password": password}, format="json",
                           HTTP_X_REAL_IP=address, **headers)


def admin_login(username: str, password: str, address: str):
    return Client().post("/admin/login/?next=/admin/", {"username": username, "password": password},
                         HTTP_X_REAL_IP=address)


def assert_locked(response):
    assert response.status_code == 429, response.content
    assert 1 <= int(response["Retry-After"]) <= 900
    body = response.json()
    assert body["code"] == "throttled" and body["errors"] == {} and "Too many failed logins" in body["detail"]


@pytest.fixture
def captured_tokens_revoked():
    sent = []

    def receiver(sender, user_id, token_ids, **kwargs):
        sent.append((user_id, token_ids))

    tokens_revoked.connect(receiver)
    yield sent
    tokens_revoked.disconnect(receiver)


@pytest.fixture
def production_hashers(settings):
    import workorder.settings as production

    settings.PASSWORD_HASHERS = production.PASSWORD_HASHERS
    return settings


# --- client address ------------------------------------------------------------------------------------
def test_client_address_believes_x_real_ip_only_from_a_trusted_peer():
    assert client_address("127.0.0.1", ATTACKER) == ATTACKER  # nginx over loopback
    assert client_address("", ATTACKER) == ATTACKER  # nginx over the unix socket
    assert client_address("192.0.2.1", ATTACKER) == "192.0.2.1"  # anyone else: their own address
    assert client_address("127.0.0.1", "not-an-address") == "127.0.0.1"
    assert client_address("::ffff:192.0.2.1", None) == "192.0.2.1"
    assert client_address("", None) == "unknown"


# --- lockout: API --------------------------------------------------------------------------------------
def test_thirty_wrong_passwords_lock_the_account_for_that_address_only(caplog):
    b.maker(username="victim")
    for _ in range(29):
        assert api_login("victim", "wrong-guess", ATTACKER).status_code == 400
    with caplog.at_level(logging.WARNING, logger="workorder.audit"):
        assert_locked(api_login("victim", "wrong-guess", ATTACKER))
    audit_lines = [r.getMessage() for r in caplog.records if r.name == "workorder.audit"]
    assert len(audit_lines) == 1 and "'victim'" in audit_lines[0] and ATTACKER in audit_lines[0]
    assert "until=" in audit_lines[0]
    # Even the right password is refused from the attacker's address while the lock holds ...
    assert_locked(api_login("victim", PASSWORD, ATTACKER))
    # ... while the owner logs in from elsewhere: a username alone is never locked.
    assert api_login("victim", PASSWORD, OFFICE).status_code == 200


def test_x_real_ip_from_an_untrusted_peer_does_not_dodge_the_lockout():
    b.maker(username="victim")
    for attempt in range(30):
        response = b.client().post(LOGIN, {"username": "victim", "password": "nope"}, format="json",
                                   REMOTE_ADDR="192.0.2.50", HTTP_X_REAL_IP=f"10.0.0.{attempt}")
    assert_locked(response)


def test_a_success_resets_the_failure_count_of_the_pair():
    b.maker(username="forgetful")
    for _ in range(29):
        assert api_login("forgetful", "typo", OFFICE).status_code == 400
    assert api_login("forgetful", PASSWORD, OFFICE).status_code == 200
    for _ in range(29):
        assert api_login("forgetful", "typo", OFFICE).status_code == 400
    assert api_login("forgetful", PASSWORD, OFFICE).status_code == 200


def test_failures_across_usernames_lock_the_address(settings):
    settings.WORKORDER_LOGIN_FAILURES_PER_ADDRESS = 12
    b.maker(username="sprayed")
    for n in range(11):
        assert api_login(f"someone-{n}", "Summer2024!", ATTACKER).status_code == 400
    assert_locked(api_login("someone-11", "Summer2024!", ATTACKER))
    assert_locked(api_login("sprayed", PASSWORD, ATTACKER))
    assert api_login("sprayed", PASSWORD, OFFICE).status_code == 200


def test_successful_logins_never_count_against_the_address(settings):
    settings.WORKORDER_LOGIN_FAILURES_PER_ADDRESS = 5
    users = [b.maker() for _ in range(20)]
    for user in users:
        assert api_login(user.username, PASSWORD, "127.0.0.1").status_code == 200


def test_unlock_login_command_lifts_a_pair_a_username_and_everything():
    b.maker(username="victim")
    for address in (ATTACKER, OFFICE):
        for _ in range(30):
            api_login("victim", "wrong", address)
        assert_locked(api_login("victim", PASSWORD, address))

    call_command("unlock_login", "--username", "victim", "--address", ATTACKER)
    assert api_login("victim", PASSWORD, ATTACKER).status_code == 200
    assert_locked(api_login("victim", PASSWORD, OFFICE))

    call_command("unlock_login", "--username", "victim")
    assert api_login("victim", PASSWORD, OFFICE).status_code == 200

    for _ in range(30):
        api_login("victim", "wrong", OFFICE)
    assert_locked(api_login("victim", PASSWORD, OFFICE))
    call_command("unlock_login", "--all")
    assert api_login("victim", PASSWORD, OFFICE).status_code == 200


def test_lockouts_and_failures_are_counted_for_prometheus():
    from workorder.accounts.metrics import login_failures, login_lockouts

    failures = login_failures._value.get()
    lockouts = login_lockouts.labels(scope="account")._value.get()
    b.maker(username="counted")
    for _ in range(30):
        api_login("counted", "wrong", ATTACKER)
    assert login_failures._value.get() - failures == 30
    assert login_lockouts.labels(scope="account")._value.get() - lockouts == 1


# --- lockout: admin -----------------------------------------------------------------------------------
def test_admin_login_locks_out_after_thirty_failures_with_429():
    b.admin(username="root")
    for _ in range(29):
        response = admin_login("root", "guess", ATTACKER)
        assert response.status_code == 200 and b"Please enter the correct username" in response.content
    assert_locked(admin_login("root", "guess", ATTACKER))
    assert_locked(admin_login("root", PASSWORD, ATTACKER))
    assert admin_login("root", PASSWORD, OFFICE).status_code == 302


def test_admin_and_api_failures_share_one_count():
    b.admin(username="root")
    for _ in range(15):
        admin_login("root", "guess", ATTACKER)
    for _ in range(14):
        assert api_login("root", "guess", ATTACKER).status_code == 400
    assert_locked(api_login("root", "guess", ATTACKER))


# --- password hashing --------------------------------------------------------------------------------
def test_new_passwords_are_hashed_with_argon2id_with_owasp_parameters(production_hashers):
    encoded = make_password("a long passphrase")
    hasher = identify_hasher(encoded)
    assert hasher.algorithm == "argon2"
    assert encoded.startswith("argon2$argon2id$v=19$m=19456,t=2,p=1$")


def test_a_pbkdf2_hash_is_upgraded_to_argon2_at_login_without_revoking_tokens(production_hashers):
    user = b.maker(username="oldtimer")
    User.objects.filter(pk=user.pk).update(password=make_password(PASSWORD, hasher="pbkdf2_sha256"))
    _, key = issue_token(User.objects.get(pk=user.pk))
    assert api_login("oldtimer", PASSWORD, OFFICE).status_code == 200
    stored = User.objects.get(pk=user.pk).password
    assert stored.startswith("argon2$argon2id$")
    assert check_password(PASSWORD, stored)
    assert authenticate_key(key) is not None  # a rehash is not a password change


def test_hashing_waits_for_a_slot_and_then_answers_503_with_retry_after(production_hashers):
    production_hashers.WORKORDER_PASSWORD_HASH_CONCURRENCY = 1
    production_hashers.WORKORDER_PASSWORD_HASH_WAIT_MS = 50
    b.maker(username="busy")
    semaphore = hashers.hashing_semaphore()
    assert semaphore.acquire(timeout=5)
    try:
        response = api_login("busy", PASSWORD, OFFICE)
        admin_response = admin_login("busy", PASSWORD, OFFICE)
    finally:
        semaphore.release()
    assert response.status_code == 503 and response["Retry-After"] == "1"
    assert response.json()["code"] == "service_unavailable"
    assert admin_response.status_code == 503 and admin_response["Retry-After"] == "1"
    assert api_login("busy", PASSWORD, OFFICE).status_code == 200


def test_the_hashing_cap_holds_under_parallel_checks(production_hashers):
    production_hashers.WORKORDER_PASSWORD_HASH_CONCURRENCY = 2
    production_hashers.WORKORDER_PASSWORD_HASH_WAIT_MS = 60000
    encoded = make_password("parallel passphrase")
    inside, peak, guard = [0], [0], threading.Lock()
    original = hashers.Argon2PasswordHasher.verify

    def counting_verify(self, password, encoded):
        with guard:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        try:
            return original(self, password, encoded)
        finally:
            with guard:
                inside[0] -= 1

    hashers.Argon2PasswordHasher.verify = counting_verify
    try:
        threads = [threading.Thread(target=check_password, args=("parallel passphrase", encoded)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        hashers.Argon2PasswordHasher.verify = original
    assert peak[0] == 2


@pytest.mark.parametrize("weak", ["password", "12345678"])
def test_weak_passwords_are_refused(weak):
    with pytest.raises(DjangoValidationError):
        validate_password(weak)
    client = Client()
    client.force_login(b.admin())
    response = client.post("/admin/accounts/user/add/", {"username": "newbie", "password1": weak, "password2": weak,
                                                          "usable_password": "true"})
    assert response.status_code == 200  # the form again, with the error
    assert b"too common" in response.content or b"entirely numeric" in response.content
    assert not User.objects.filter(username="newbie").exists()


# --- tokens --------------------------------------------------------------------------------------------
def me(key: str):
    return b.client().get("/api/auth/me/", HTTP_AUTHORIZATION=f"Token {key}")


def test_only_the_digest_of_a_key_is_stored():
    user = b.maker()
    response = api_login(user.username, PASSWORD, OFFICE, HTTP_USER_AGENT="ShopFloorTablet/2.1")
    key = response.json()["token"]
    assert len(key) == 40 and int(key, 16) >= 0
    assert response.json()["expires_at"]
    token = AuthToken.objects.get(user=user)
    assert token.digest == hashlib.sha256(key.encode()).hexdigest()
    assert token.device == "ShopFloorTablet/2.1" and key.startswith(token.key_prefix)
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_authtoken")
        assert not any(key in str(value) for row in cursor.fetchall() for value in row)


def test_an_idle_token_expires_with_401(settings):
    user = b.maker()
    token, key = issue_token(user)
    assert me(key).status_code == 200
    idle = dt.timedelta(seconds=settings.WORKORDER_TOKEN_IDLE_SECONDS)
    AuthToken.objects.filter(pk=token.pk).update(last_used_at=token.last_used_at - idle - dt.timedelta(seconds=1))
    response = me(key)
    assert response.status_code == 401 and response.json()["code"] == "authentication_failed"


def test_a_token_in_use_expires_at_its_absolute_end():
    user = b.maker()
    token, key = issue_token(user)
    now = token.created_at
    AuthToken.objects.filter(pk=token.pk).update(created_at=now - dt.timedelta(days=8), last_used_at=now,
                                                 expires_at=now - dt.timedelta(seconds=1))
    assert me(key).status_code == 401


def test_use_moves_the_idle_deadline_at_most_once_a_minute():
    user = b.maker()
    token, key = issue_token(user)
    AuthToken.objects.filter(pk=token.pk).update(last_used_at=token.last_used_at - dt.timedelta(seconds=30))
    assert me(key).status_code == 200
    recent = AuthToken.objects.get(pk=token.pk).last_used_at
    assert recent == token.last_used_at - dt.timedelta(seconds=30)  # not written: used under a minute ago
    AuthToken.objects.filter(pk=token.pk).update(last_used_at=token.last_used_at - dt.timedelta(minutes=5))
    assert me(key).status_code == 200
    assert AuthToken.objects.get(pk=token.pk).last_used_at > token.last_used_at - dt.timedelta(minutes=1)


def test_websocket_lookups_do_not_extend_a_token():
    user = b.maker()
    token, key = issue_token(user)
    old = token.last_used_at - dt.timedelta(hours=1)
    AuthToken.objects.filter(pk=token.pk).update(last_used_at=old)
    found_user, found = authenticate_key(key, touch=False)
    assert found_user == user and found.deadline() == old + dt.timedelta(hours=12)
    assert AuthToken.objects.get(pk=token.pk).last_used_at == old


def test_the_eleventh_login_revokes_the_oldest_token(django_capture_on_commit_callbacks, captured_tokens_revoked):
    user = b.maker()
    keys = [api_login(user.username, PASSWORD, OFFICE).json()["token"] for _ in range(10)]
    oldest = AuthToken.objects.filter(user=user).order_by("created_at", "pk").first()
    with django_capture_on_commit_callbacks(execute=True):
        keys.append(api_login(user.username, PASSWORD, OFFICE).json()["token"])
    assert AuthToken.objects.filter(user=user).count() == 10
    assert me(keys[0]).status_code == 401
    assert all(me(key).status_code == 200 for key in keys[1:])
    assert captured_tokens_revoked == [(user.pk, [oldest.pk])]


def test_logout_revokes_only_the_token_of_the_request(django_capture_on_commit_callbacks, captured_tokens_revoked):
    user = b.maker()
    phone = api_login(user.username, PASSWORD, OFFICE).json()["token"]
    laptop = api_login(user.username, PASSWORD, OFFICE).json()["token"]
    phone_id = authenticate_key(phone)[1].pk
    with django_capture_on_commit_callbacks(execute=True):
        assert b.client().post("/api/auth/logout/", HTTP_AUTHORIZATION=f"Token {phone}").status_code == 204
    assert me(phone).status_code == 401
    assert me(laptop).status_code == 200
    assert captured_tokens_revoked == [(user.pk, [phone_id])]


def test_logout_also_ends_an_admin_session_sent_along():
    user = b.admin()
    _, key = issue_token(user)
    browser = Client()
    browser.force_login(user)
    assert browser.get("/admin/").status_code == 200
    assert browser.post("/api/auth/logout/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 204
    assert browser.get("/admin/").status_code == 302  # back to the login page


def test_the_api_does_not_accept_a_session_cookie():
    user = b.admin()
    browser = Client()
    browser.force_login(user)
    assert browser.get("/api/auth/me/").status_code == 401


def test_a_password_change_revokes_every_token_and_says_so(django_capture_on_commit_callbacks,
                                                            captured_tokens_revoked):
    user = b.maker()
    keys = [issue_token(user)[1] for _ in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        user.set_password("a brand new passphrase")
        user.save()
    assert all(me(key).status_code == 401 for key in keys)
    assert not AuthToken.objects.filter(user=user).exists()
    assert captured_tokens_revoked == [(user.pk, None)]


def test_deactivation_revokes_every_token_and_says_so(django_capture_on_commit_callbacks, captured_tokens_revoked):
    user = b.maker()
    _, key = issue_token(user)
    with django_capture_on_commit_callbacks(execute=True):
        user.is_active = False
        user.save(update_fields=["is_active"])
    assert me(key).status_code == 401
    assert not AuthToken.objects.filter(user=user).exists()
    assert captured_tokens_revoked == [(user.pk, None)]


def test_saving_other_fields_keeps_the_tokens(django_capture_on_commit_callbacks, captured_tokens_revoked):
    user = b.maker()
    _, key = issue_token(user)
    with django_capture_on_commit_callbacks(execute=True):
        user.first_name = "Renamed"
        user.save()
    assert me(key).status_code == 200
    assert captured_tokens_revoked == []


def test_revoke_all_sends_the_signal_only_after_commit(django_capture_on_commit_callbacks, captured_tokens_revoked):
    user = b.maker()
    issue_token(user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        revoke_all(user)
    assert captured_tokens_revoked == [] and len(callbacks) == 1
    callbacks[0]()
    assert captured_tokens_revoked == [(user.pk, None)]


@pytest.mark.parametrize("header", ["Token " + "a" * 65, "Token abc\x00def", "Token " + "0" * 40])
def test_impossible_or_unknown_keys_are_401(header):
    response = b.client().get("/api/auth/me/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401 and response.json()["code"] == "authentication_failed"


def test_the_migration_hashes_drf_tokens_and_drops_their_table():
    migration = importlib.import_module("workorder.accounts.migrations.0003_hash_drf_tokens_and_admin_role")
    user = b.maker()
    old_key = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute('CREATE TABLE authtoken_token ("key" varchar(40) PRIMARY KEY, created timestamptz NOT NULL, '
                       'user_id bigint NOT NULL UNIQUE)')
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, now() - interval '400 days', %s)", [old_key, user.pk])
    from django.apps import apps

    with connection.schema_editor() as editor:
        migration.copy_plaintext_tokens(apps, editor)
    assert "authtoken_token" not in connection.introspection.table_names()
    token = AuthToken.objects.get(user=user)
    assert token.digest == hashlib.sha256(old_key.encode()).hexdigest()
    assert me(old_key).status_code == 200  # nobody is logged out by the upgrade
    with connection.schema_editor() as editor:
        migration.copy_plaintext_tokens(apps, editor)  # a database without the table: nothing to do
    assert AuthToken.objects.filter(user=user).count() == 1


def test_the_migration_gives_staff_without_a_role_the_admin_role():
    migration = importlib.import_module("workorder.accounts.migrations.0003_hash_drf_tokens_and_admin_role")
    staff = b.user("", None, is_staff=True)
    staff_supervisor = b.user(Role.SUPERVISOR, b.department(), is_staff=True)
    plain = b.maker()
    from django.apps import apps

    migration.give_staff_the_admin_role(apps, None)
    assert User.objects.get(pk=staff.pk).role == Role.ADMIN
    assert User.objects.get(pk=staff_supervisor.pk).role == Role.SUPERVISOR
    assert User.objects.get(pk=plain.pk).role == Role.MAKER


# --- admins and self-approval ----------------------------------------------------------------------------
def test_is_staff_alone_is_not_an_api_admin():
    staff = b.user("", None, is_staff=True)
    assert not staff.is_admin
    assert b.user(Role.ADMIN).is_admin
    assert b.user("", None, is_superuser=True).is_admin
    shop = b.Shop()
    order = b.work_order(shop.maker, shop.product)
    assert b.client(staff).post(f"/api/workorders/{order.pk}/approve/").status_code in (403, 404)
    assert b.client(b.user(Role.ADMIN)).post(f"/api/workorders/{order.pk}/approve/").status_code == 200


def test_a_supervisor_may_not_approve_their_own_work_order_by_default():
    shop = b.Shop()
    own = b.work_order(shop.cut_sup, shop.product)
    with pytest.raises(PermissionDenied):
        services.approve_work_order(shop.cut_sup, own.pk)
    response = b.client(shop.cut_sup).post(f"/api/workorders/{own.pk}/approve/")
    assert response.status_code == 403 and "another supervisor" in response.json()["detail"]
    assert b.client(shop.weld_sup).post(f"/api/workorders/{own.pk}/approve/").status_code == 200


def test_self_approval_is_allowed_with_the_setting(settings):
    settings.WORKORDER_ALLOW_SELF_APPROVAL = True
    shop = b.Shop()
    own = b.work_order(shop.cut_sup, shop.product)
    assert b.client(shop.cut_sup).post(f"/api/workorders/{own.pk}/approve/").status_code == 200


def test_lockout_module_refuses_an_unlock_without_a_target():
    with pytest.raises(ValueError):
        lockout.unlock()


# --- a real gunicorn (2 workers) behind a unix socket, state in Redis ----------------------------------
@pytest.mark.services
def test_lockout_is_shared_by_gunicorn_workers_over_redis_and_counted_in_metrics(postgres_server, tmp_path):
    from harness.app import GunicornServer
    from harness.services import RedisServer
    from tests.runtime_support import create_database, manage, run_python, server_env

    redis = RedisServer(str(tmp_path / "redis")).start()
    server = None
    try:
        env = server_env(tmp_path, create_database(postgres_server, "wo_lockout"), redis.url(),
                         WORKORDER_LOGIN_FAILURES_PER_ACCOUNT=5, WORKORDER_METRICS_TOKEN="lockout-metrics-token")
        manage(env, "migrate", "--noinput")
        run_python(env, "from workorder.accounts.models import User; import json\n"
                        "User.objects.create_user('gate', password='gate-pass-123', role='maker')\n"
                        "print(json.dumps({}))")
        server = GunicornServer(env, tmp_path / "gunicorn", unix_socket=True, workers=2).start()

        def login(password, address):
            # Over the unix socket, as nginx connects; fresh connections spread over both workers.
            return server.request("POST", LOGIN, body={"username": "gate", "password": password},
                                  headers={"X-Real-IP": address})

        statuses = [login("wrong", ATTACKER)[0] for _ in range(5)]
        assert statuses == [400, 400, 400, 400, 429]
        status, headers, body = login("gate-pass-123", ATTACKER)
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 900, body
        status, _, body = login("gate-pass-123", OFFICE)
        assert status == 200 and len(json.loads(body)["token"]) == 40
        status, _, metrics = server.request("GET", "/metrics/",
                                            headers={"Authorization": "Bearer lockout-metrics-token"})
        text = metrics.decode()
        assert 'workorder_login_lockouts_total{scope="account"} 1.0' in text
        assert "workorder_login_failures_total 5.0" in text
    finally:
        if server is not None:
            server.stop()
        redis.cleanup()
