"""Account hand-out (no duplicates, also across workers) and the production-host guard."""

import pytest

from workorder_loadtest.accounts import AccountPool, seeded_number, username
from workorder_loadtest.cli import production_reason

SIZES = {"operator": 10, "supervisor": 4, "maker": 3}


def test_usernames_follow_the_seed_contract():
    assert username("loadtest", "operator", 7) == "loadtest-operator-0007"
    assert seeded_number("loadtest", "supervisor", "loadtest-supervisor-0012") == 12
    assert seeded_number("loadtest", "operator", "loadtest-supervisor-0012") is None
    assert seeded_number("loadtest", "operator", "test_operator") is None
    assert seeded_number("loadtest", "operator", None) is None


def test_no_duplicates_within_a_process_and_release():
    pool = AccountPool("loadtest", SIZES)
    got = [pool.acquire("operator") for _ in range(10)]
    assert len({a.username for a in got}) == 10 and not any(a.reused for a in got)
    pool.release(got[3])
    again = pool.acquire("operator")
    assert again.number == got[3].number and not again.reused


def test_no_duplicates_across_workers():
    workers = [AccountPool("loadtest", SIZES, worker_index=i, worker_count=3) for i in range(3)]
    names = [w.acquire("operator").username for _ in range(3) for w in workers]
    assert len(names) == len(set(names)) == 9
    assert all(n.startswith("loadtest-operator-") for n in names)


def test_exhausted_pool_wraps_around_and_says_so():
    pool = AccountPool("loadtest", SIZES)
    makers = [pool.acquire("maker") for _ in range(5)]
    assert [(m.number, m.reused) for m in makers] == [(1, False), (2, False), (3, False), (1, True), (2, True)]
    pool.release(makers[3])  # a shared account is not given back
    assert pool.acquire("maker").reused
    worker = AccountPool("loadtest", SIZES, worker_index=1, worker_count=2)
    assert [worker.acquire("supervisor").number for _ in range(4)] == [2, 4, 2, 4]
    empty = AccountPool("loadtest", {"operator": 0})
    with pytest.raises(LookupError):
        empty.acquire("operator")


def test_claim_specific_account():
    pool = AccountPool("loadtest", SIZES)
    assert pool.claim("operator", 10).username == "loadtest-operator-0010"
    assert pool.claim("operator", 10) is None
    assert all(pool.acquire("operator").number != 10 for _ in range(9))


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000", "http://localhost", "http://[::1]:8080", "http://10.1.2.3", "http://192.168.0.5",
    "http://server", "http://machine:80", "https://staging.workorder.example.com", "https://workorder-staging.acme.io",
    "https://qa.acme.io", "http://app.internal", "https://preprod.acme.com", "http://wo.localhost",
])
def test_test_targets_are_allowed(url):
    assert production_reason(url) is None


@pytest.mark.parametrize("url", [
    "https://workorder.acme.com", "https://prod.acme.io", "https://api-production.acme.io", "https://www.acme.com",
    "http://8.8.8.8", "https://live.acme.com", "ftp://localhost", "not a url",
])
def test_production_looking_targets_are_refused(url):
    assert production_reason(url)
