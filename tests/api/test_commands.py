"""Commands over HTTP: what each answers, what it records, and what it refuses."""

from __future__ import annotations

import uuid


async def test_open_answers_201_with_id_version_and_position(api):
    """Opening an account answers 201 with its id, version 1 and the position of AccountOpened."""
    r = await api.post("/api/command/accounts", json={"ownerName": "Ada Lovelace", "currency": "GBP"})

    assert r.status_code == 201
    body = r.json()
    assert set(body) >= {"accountId", "version", "position"}
    assert body["version"] == 1
    assert r.headers["location"] == f"/api/query/accounts/{body['accountId']}"
    assert r.headers["etag"] == '"1"'
    [event] = await api.events(body["accountId"])
    assert event.event_type == "AccountOpened"
    assert event.position == body["position"]
    assert (event.data.owner_name, event.data.currency) == ("Ada Lovelace", "GBP")


async def test_deposit_and_withdraw_answer_the_new_version_and_position(api):
    """Each deposit and withdrawal answers 200 with the account's next version and its event's position."""
    account_id = await api.open()

    deposited = await api.deposit(account_id, "10.00")
    withdrawn = await api.withdraw(account_id, "2.50")

    assert deposited.status_code == withdrawn.status_code == 200
    assert deposited.json()["accountId"] == withdrawn.json()["accountId"] == account_id
    assert [deposited.json()["version"], withdrawn.json()["version"]] == [2, 3]
    events = await api.events(account_id)
    assert [e.position for e in events[1:]] == [deposited.json()["position"], withdrawn.json()["position"]]
    summary = await api.account(account_id, withdrawn.json()["position"])
    assert summary["currentBalance"] == "7.50"


async def test_json_numbers_are_read_exactly_never_through_a_float(api):
    """0.1 sent ten times as a JSON number makes exactly 1.00."""
    account_id = await api.open()

    for _ in range(10):
        r = await api.post(
            f"/api/command/accounts/{account_id}/deposit",
            content=b'{"amount": 0.1, "description": "a dime"}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 200, r.text

    summary = await api.account(account_id, r.json()["position"])
    assert summary["currentBalance"] == "1.00"
    assert [str(e.data.amount) for e in (await api.events(account_id))[1:]] == ["0.10"] * 10


async def test_amounts_as_strings_integers_and_numbers_mean_the_same_money(api):
    """Amounts as strings, decimals, integers and exponents mean the same money; JPY 100 is 100."""
    account_id = await api.open()
    for raw in (b'"12.5"', b"12.5", b'"12.50"', b"12.50", b"3", b'"0012.5"', b"1e1"):
        r = await api.post(
            f"/api/command/accounts/{account_id}/deposit",
            content=b'{"amount": ' + raw + b"}",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 200, (raw, r.text)
    yen = await api.open(currency="JPY")
    r = await api.deposit(yen, 100)
    assert r.status_code == 200

    amounts = [str(e.data.amount) for e in (await api.events(account_id))[1:]]
    assert amounts == ["12.50", "12.50", "12.50", "12.50", "3.00", "12.50", "10.00"]
    assert (await api.account(yen, r.json()["position"]))["currentBalance"] == "100"


async def test_withdrawing_more_than_the_balance_is_refused_and_records_nothing(api):
    """A withdrawal above the balance is 422 insufficient-funds, naming both amounts; the log is unchanged."""
    account_id = await api.funded("10.00")
    size = await api.log_size()

    r = await api.withdraw(account_id, "10.01")

    body = api.problem(r, 422, "insufficient-funds")
    assert (body["balance"], body["requested"], body["currency"]) == ("10.00", "10.01", "EUR")
    assert await api.log_size() == size
    assert await api.version(account_id) == 2


async def test_closing_answers_200_then_the_account_takes_no_more_commands(api):
    """Close at zero is 200; later commands are 409 account-closed and record nothing."""
    account_id = await api.open()

    closed = await api.post(f"/api/command/accounts/{account_id}/close")
    assert closed.status_code == 200
    assert closed.json()["version"] == 2
    size = await api.log_size()

    api.problem(await api.deposit(account_id, "1.00"), 409, "account-closed")
    api.problem(await api.withdraw(account_id, "1.00"), 409, "account-closed")
    api.problem(await api.post(f"/api/command/accounts/{account_id}/close"), 409, "account-closed")
    assert await api.log_size() == size
    assert (await api.account(account_id, closed.json()["position"]))["status"] == "closed"


async def test_closing_an_account_that_holds_money_is_refused(api):
    """Closing a non-empty account is 422 account-not-empty and records nothing."""
    account_id = await api.funded("0.01")
    size = await api.log_size()

    body = api.problem(await api.post(f"/api/command/accounts/{account_id}/close"), 422, "account-not-empty")

    assert body["balance"] == "0.01"
    assert await api.log_size() == size


async def test_commands_on_an_unknown_account_are_404(api):
    """Deposit, withdraw and close on an id no account has (a UUID or not) are 404 account-not-found."""
    await api.open()
    size = await api.log_size()

    for account_id in (str(uuid.uuid4()), "not-a-uuid", "%00", "1" * 300):
        for command, body in (("deposit", {"amount": "1"}), ("withdraw", {"amount": "1"}), ("close", None)):
            r = await api.post(f"/api/command/accounts/{account_id}/{command}", json=body)
            api.problem(r, 404, "account-not-found")
    assert await api.log_size() == size
