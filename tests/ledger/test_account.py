"""The Account aggregate's rules, one given/when/then per rule, and the money helpers."""

from __future__ import annotations

import decimal
import pickle
import re
import uuid
from decimal import Decimal
from typing import Any

import pytest

from eventvault import REDACTED, DomainError, default_registry
from eventvault.store.codec import EventCodec
from eventvault.testing import given
from eventvault_ledger.currencies import ACTIVE, NAMES, WITHDRAWN, check_currency, minor_units
from eventvault_ledger.domain import (
    MAX_AMOUNT,
    MAX_BALANCE,
    Account,
    AccountClosed,
    AccountOpened,
    AccountStatus,
    MoneyDeposited,
    MoneyWithdrawn,
    PersonalDataErased,
    format_money,
    owner_tag,
    parse_amount,
)
from eventvault_ledger.errors import (
    AccountIsClosed,
    AccountNotEmpty,
    AccountNotOpened,
    BalanceLimitExceeded,
    InsufficientFunds,
    InvalidAccountId,
    InvalidAmount,
    InvalidDescription,
    InvalidOwnerName,
    LedgerError,
    UnknownCurrency,
)

OPENED = AccountOpened("Ada Lovelace", "EUR")
OPENED_JPY = AccountOpened("Hiro Nakamura", "JPY")
OPENED_BHD = AccountOpened("Layla Haddad", "BHD")
OPENED_CLF = AccountOpened("Camila Rojas", "CLF")


def _open(owner_name: Any = "Ada Lovelace", currency: Any = "EUR", **kw):
    return lambda _: Account.open(owner_name, currency, **kw)


# -- open ----------------------------------------------------------------------


def test_open_records_account_opened_and_starts_empty():
    """Opening records AccountOpened; the account is open, empty and at version 1."""
    account = given(Account).when(_open("Ada Lovelace", "EUR")).then(OPENED)
    assert account.state() == {
        "owner_name": "Ada Lovelace",
        "currency": "EUR",
        "balance": Decimal(0),
        "status": AccountStatus.OPEN,
        "transaction_count": 0,
        "transfers_out": {},
        "owner_tag": owner_tag("Ada Lovelace"),
        "personal_data_erased": False,
    }
    assert account.version == 1


def test_erasing_personal_data_records_it_once_and_redacts_the_owner():
    """Given an open account, erasing records PersonalDataErased with its owner tag; again records nothing."""
    account = (
        given(Account, OPENED)
        .when(Account.erase_personal_data)
        .then(PersonalDataErased(owner_tag("Ada Lovelace")))
    )
    assert (account.owner_name, account.owner_tag, account.personal_data_erased) == (
        REDACTED,
        owner_tag("Ada Lovelace"),
        True,
    )
    given(Account, OPENED, PersonalDataErased(owner_tag("Ada Lovelace"))).when(
        Account.erase_personal_data
    ).then()


def test_a_closed_account_can_be_erased_too():
    """Erasing is not a command on the money: a closed account's owner is erased as well."""
    given(Account, OPENED, AccountClosed()).when(Account.erase_personal_data).then(
        PersonalDataErased(owner_tag("Ada Lovelace"))
    )


def test_a_replayed_erased_account_keeps_its_owner_tag_for_the_close():
    """Replayed with the name redacted, the account still closes under the tag it was opened with."""
    account = Account.replay(
        "a", [AccountOpened(REDACTED, "EUR"), PersonalDataErased(owner_tag("Ada Lovelace"))]
    )
    account.close()
    assert account.tags_of(account.pending_events[0]) == (owner_tag("Ada Lovelace"), "currency:EUR")


def test_the_placeholder_is_no_owner_name():
    with pytest.raises(InvalidOwnerName, match="erased"):
        Account.open(REDACTED, "EUR")


def test_open_gives_a_new_uuid7_id_and_an_account_stream():
    """Each opened account gets a fresh version 7 UUID and the stream account-<uuid>."""
    first = Account.open("Ada Lovelace", "EUR")
    second = Account.open("Ada Lovelace", "EUR")
    assert first.id != second.id
    assert uuid.UUID(first.id).version == 7
    assert first.stream_id == f"account-{first.id}"


def test_open_takes_a_given_account_id_in_canonical_form():
    """A given account id (UUID or text) is used, written as a canonical lower-case UUID."""
    wanted = uuid.UUID("0190f0e5-7c9d-7c3a-8d1e-0123456789ab")
    assert Account.open("Ada", "EUR", account_id=wanted).id == str(wanted)
    assert Account.open("Ada", "EUR", account_id=str(wanted).upper()).id == str(wanted)


@pytest.mark.parametrize("bad_id", ["", "not-a-uuid", "account-1", 42, "x" * 1000])
def test_open_refuses_an_account_id_that_is_not_a_uuid(bad_id):
    """An account id that is not a UUID is refused with InvalidAccountId."""
    given(Account).when(_open(account_id=bad_id)).then_raises(InvalidAccountId, "UUID")


def test_open_strips_and_normalises_the_owner_name():
    """Surrounding whitespace is dropped and the name is stored in Unicode NFC."""
    decomposed = "Zoe\u0308 Saldan\u0303a"  # e + combining diaeresis, n + combining tilde
    given(Account).when(_open(f"  {decomposed}  ", "EUR")).then(AccountOpened("Zo\u00eb Salda\u00f1a", "EUR"))


def test_open_accepts_an_owner_name_of_the_maximum_length():
    """An owner name of exactly 200 characters is accepted."""
    given(Account).when(_open("A" * 200, "EUR")).then(AccountOpened("A" * 200, "EUR"))


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("A" * 201, "at most 200"),
        ("Ada\nLovelace", "control"),
        ("Ada\tLovelace", "control"),
        ("Ada\x00", "control"),
        ("Ada\x7f", "control"),
        ("Ada\u2028Lovelace", "line breaks"),
        ("Ada\ud800", "control"),
        ("Ada \u202enoitcasnart", "text-direction.*found U\\+202E"),
        ("Ada \u2066x\u2069", "text-direction.*found U\\+2066"),
        ("Ada\u200bLovelace", "invisible"),
        ("Ada\u200dLovelace", "invisible"),
        ("\ufeffAda", "invisible"),
        (42, "str, got int"),
        (None, "str, got NoneType"),
    ],
)
def test_open_refuses_a_bad_owner_name(name, match):
    """Empty, blank, too long, control-character and non-str owner names are refused."""
    given(Account).when(_open(name, "EUR")).then_raises(InvalidOwnerName, match)


@pytest.mark.parametrize("code", ["ABC", "EURO", "EU", "", "XAU", "XTS", "XXX", "XDR"])
def test_open_refuses_an_unknown_currency(code):
    """A code that is not an active ISO 4217 currency (metals and test codes included) is refused."""
    given(Account).when(_open("Ada", code)).then_raises(UnknownCurrency, "not an ISO 4217 currency")


def test_open_refuses_a_lower_case_currency_and_names_the_right_code():
    """Currency codes are case-sensitive: 'usd' is refused with a hint at 'USD'."""
    given(Account).when(_open("Ada", "usd")).then_raises(UnknownCurrency, "upper case.*'USD'")


def test_open_refuses_a_withdrawn_currency():
    """A currency that left ISO 4217 (the kuna) cannot be chosen for a new account."""
    given(Account).when(_open("Ada", "HRK")).then_raises(UnknownCurrency, "no longer")


def test_open_refuses_a_currency_that_is_not_a_str():
    """A currency given as something other than text is refused with UnknownCurrency."""
    given(Account).when(_open("Ada", 978)).then_raises(UnknownCurrency, "str, got int")


# -- deposit -------------------------------------------------------------------


def test_deposit_records_money_deposited_and_raises_the_balance():
    """A valid deposit records MoneyDeposited and adds to the balance and transaction count."""
    account = (
        given(Account, OPENED)
        .when(lambda a: a.deposit(Decimal("10.50"), "salary"))
        .then(MoneyDeposited(Decimal("10.50"), "salary"))
    )
    assert account.balance == Decimal("10.50")
    assert account.transaction_count == 1
    assert account.version == 2


@pytest.mark.parametrize(
    ("event", "amount", "recorded"),
    [
        (OPENED, Decimal(5), "5.00"),
        (OPENED, Decimal("1.000"), "1.00"),
        (OPENED, Decimal("1.5"), "1.50"),
        (OPENED_JPY, Decimal("100.00"), "100"),
        (OPENED_BHD, Decimal("1.234"), "1.234"),
        (OPENED_CLF, Decimal("1.2345"), "1.2345"),
    ],
)
def test_deposit_records_the_amount_at_the_currency_scale(event, amount, recorded):
    """Amounts equal to a value with the currency's minor units are accepted and recorded at that scale."""
    account = given(Account, event).when(lambda a: a.deposit(amount)).then(MoneyDeposited(amount))
    (deposited,) = account.pending_events
    assert isinstance(deposited, MoneyDeposited)
    assert str(deposited.amount) == recorded


@pytest.mark.parametrize(
    "amount", [Decimal(0), Decimal("0.00"), Decimal("-0"), Decimal(-5), Decimal("-0.01")]
)
def test_deposit_refuses_zero_and_negative_amounts(amount):
    """A deposit of zero or less is refused."""
    given(Account, OPENED).when(lambda a: a.deposit(amount)).then_raises(InvalidAmount, "greater than zero")


@pytest.mark.parametrize(
    ("event", "amount", "match"),
    [
        (OPENED, Decimal("1.001"), "EUR amounts have at most 2 decimal places, got 1.001"),
        (OPENED, Decimal("0.001"), "at most 2 decimal places"),
        (OPENED, Decimal("1.0000000000000000000000000000000001"), "at most 2 decimal places"),
        (OPENED_JPY, Decimal("1.5"), "JPY amounts have no decimal places, got 1.5"),
        (OPENED_JPY, Decimal("100.01"), "no decimal places"),
        (OPENED_BHD, Decimal("1.2345"), "BHD amounts have at most 3 decimal places"),
        (OPENED_CLF, Decimal("1.23456"), "CLF amounts have at most 4 decimal places"),
    ],
)
def test_deposit_refuses_more_decimals_than_the_currency_has(event, amount, match):
    """An amount with a non-zero digit beyond the currency's minor units is refused, never rounded."""
    given(Account, event).when(lambda a: a.deposit(amount)).then_raises(InvalidAmount, re.escape(match))


@pytest.mark.parametrize(
    ("amount", "match"),
    [
        (0.1, "not a float"),
        (10.0, "not a float"),
        (5, "Decimal, got int"),
        ("5.00", "Decimal, got str"),
        (True, "Decimal, got bool"),
        (None, "Decimal, got NoneType"),
    ],
)
def test_deposit_refuses_amounts_that_are_not_decimals(amount, match):
    """Floats and other non-Decimal amounts are refused with a message naming the type."""
    given(Account, OPENED).when(lambda a: a.deposit(amount)).then_raises(InvalidAmount, match)


@pytest.mark.parametrize("amount", ["NaN", "sNaN", "Infinity", "-Infinity"])
def test_deposit_refuses_nan_and_infinity(amount):
    """NaN (quiet or signalling) and infinities are refused as not finite."""
    given(Account, OPENED).when(lambda a: a.deposit(Decimal(amount))).then_raises(InvalidAmount, "finite")


def test_deposit_accepts_the_maximum_amount():
    """A deposit of exactly the per-operation maximum is accepted."""
    given(Account, OPENED).when(lambda a: a.deposit(MAX_AMOUNT)).then(MoneyDeposited(MAX_AMOUNT))


@pytest.mark.parametrize("amount", [MAX_AMOUNT + Decimal("0.01"), Decimal("1E+30")])
def test_deposit_refuses_more_than_the_maximum_amount(amount):
    """A deposit above the per-operation maximum is refused, naming the maximum."""
    given(Account, OPENED).when(lambda a: a.deposit(amount)).then_raises(InvalidAmount, "at most 1000000000")


def test_deposit_may_fill_the_balance_up_to_the_cap():
    """A deposit that brings the balance to exactly the cap is accepted."""
    account = (
        given(Account, OPENED, MoneyDeposited(MAX_BALANCE - 1))
        .when(lambda a: a.deposit(Decimal(1)))
        .then(MoneyDeposited(Decimal(1)))
    )
    assert account.balance == MAX_BALANCE


def test_deposit_refuses_to_take_the_balance_past_the_cap():
    """A deposit that would take the balance above the cap is refused with the numbers involved."""
    error = (
        given(Account, OPENED, MoneyDeposited(MAX_BALANCE - 1))
        .when(lambda a: a.deposit(Decimal("1.01")))
        .then_raises(
            BalanceLimitExceeded, r"1\.01 EUR .* 999999999999999\.00 EUR .* 1000000000000000\.00 EUR"
        )
    )
    assert isinstance(error, BalanceLimitExceeded)
    assert error.amount == Decimal("1.01")
    assert error.limit == MAX_BALANCE


def test_deposit_keeps_a_description_up_to_the_limit():
    """A description of 500 characters is recorded as given."""
    text = "d" * 500
    given(Account, OPENED).when(lambda a: a.deposit(Decimal(1), text)).then(MoneyDeposited(Decimal(1), text))


@pytest.mark.parametrize(
    ("description", "match"),
    [("d" * 501, "at most 500"), ("line\nbreak", "control"), ("bell\x07", "control"), (7, "str, got int")],
)
def test_deposit_refuses_a_bad_description(description, match):
    """Too long, control-character and non-str descriptions are refused."""
    given(Account, OPENED).when(lambda a: a.deposit(Decimal(1), description)).then_raises(
        InvalidDescription, match
    )


def test_deposit_sums_exactly_whatever_the_callers_decimal_context():
    """Balances are exact even when the thread's decimal context has a tiny precision."""
    with decimal.localcontext(prec=3):
        account = (
            given(Account, OPENED, MoneyDeposited(Decimal("123456789.01")))
            .when(lambda a: a.deposit(Decimal("0.02")))
            .then(MoneyDeposited(Decimal("0.02")))
        )
    assert account.balance == Decimal("123456789.03")


# -- withdraw ------------------------------------------------------------------


def test_withdraw_records_money_withdrawn_and_lowers_the_balance():
    """A covered withdrawal records MoneyWithdrawn and lowers the balance."""
    account = (
        given(Account, OPENED, MoneyDeposited(Decimal("100.00")))
        .when(lambda a: a.withdraw(Decimal("30.25"), "rent"))
        .then(MoneyWithdrawn(Decimal("30.25"), "rent"))
    )
    assert account.balance == Decimal("69.75")
    assert account.transaction_count == 2


def test_withdraw_refuses_more_than_the_balance_and_says_both_numbers():
    """Withdrawing more than the balance raises InsufficientFunds naming balance and amount."""
    error = (
        given(Account, OPENED, MoneyDeposited(Decimal("10.00")))
        .when(lambda a: a.withdraw(Decimal(25), "rent"))
        .then_raises(InsufficientFunds, r"balance is 10\.00 EUR.*25\.00 EUR")
    )
    assert isinstance(error, InsufficientFunds)
    assert (error.balance, error.requested, error.currency) == (Decimal("10.00"), Decimal("25.00"), "EUR")


def test_withdraw_from_an_empty_account_is_insufficient_funds():
    """A new account holds nothing, so any withdrawal is refused."""
    given(Account, OPENED).when(lambda a: a.withdraw(Decimal("0.01"))).then_raises(
        InsufficientFunds, r"balance is 0\.00 EUR"
    )


def test_withdraw_the_exact_balance_leaves_zero():
    """Withdrawing exactly the balance is allowed and leaves zero."""
    account = (
        given(Account, OPENED, MoneyDeposited(Decimal("10.00")), MoneyWithdrawn(Decimal("2.50")))
        .when(lambda a: a.withdraw(Decimal("7.50")))
        .then(MoneyWithdrawn(Decimal("7.50")))
    )
    assert account.balance == 0


@pytest.mark.parametrize(
    ("amount", "match"),
    [
        (Decimal(0), "greater than zero"),
        (Decimal(-1), "greater than zero"),
        (Decimal("0.005"), "at most 2 decimal places"),
        (0.5, "not a float"),
        (Decimal("NaN"), "finite"),
        (MAX_AMOUNT + 1, "at most 1000000000"),
    ],
)
def test_withdraw_checks_the_amount_like_deposit(amount, match):
    """Withdrawals refuse the same invalid amounts as deposits, before looking at the balance."""
    given(Account, OPENED, MoneyDeposited(MAX_BALANCE)).when(lambda a: a.withdraw(amount)).then_raises(
        InvalidAmount, match
    )


def test_withdraw_refuses_a_bad_description():
    """A withdrawal's description follows the same rules as a deposit's."""
    given(Account, OPENED, MoneyDeposited(Decimal(5))).when(
        lambda a: a.withdraw(Decimal(1), "x" * 501)
    ).then_raises(InvalidDescription, "at most 500")


# -- close ---------------------------------------------------------------------


def test_close_at_zero_records_account_closed():
    """An account with a zero balance can be closed, and its status becomes closed."""
    account = given(Account, OPENED).when(lambda a: a.close()).then(AccountClosed())
    assert account.status is AccountStatus.CLOSED


def test_close_after_withdrawing_everything():
    """An account emptied by withdrawals can be closed."""
    given(Account, OPENED, MoneyDeposited(Decimal("5.00")), MoneyWithdrawn(Decimal("5.00"))).when(
        lambda a: a.close()
    ).then(AccountClosed())


def test_close_refuses_an_account_that_holds_money():
    """Closing an account with a non-zero balance is refused, naming the balance."""
    given(Account, OPENED, MoneyDeposited(Decimal("0.01"))).when(lambda a: a.close()).then_raises(
        AccountNotEmpty, r"still holds 0\.01 EUR"
    )


def test_close_twice_is_refused():
    """A closed account cannot be closed again."""
    given(Account, OPENED, AccountClosed()).when(lambda a: a.close()).then_raises(
        AccountIsClosed, "is closed"
    )


@pytest.mark.parametrize(
    "command",
    [
        lambda a: a.deposit(Decimal(1)),
        lambda a: a.withdraw(Decimal(1)),
        lambda a: a.close(),
        lambda a: a.deposit(Decimal(-1)),
    ],
    ids=["deposit", "withdraw", "close", "invalid-deposit"],
)
def test_every_command_on_a_closed_account_is_refused(command):
    """Deposits, withdrawals and closing all raise AccountIsClosed once the account is closed."""
    error = given(Account, OPENED, AccountClosed()).when(command).then_raises(AccountIsClosed)
    assert isinstance(error, AccountIsClosed)
    assert error.account_id in str(error)


@pytest.mark.parametrize(
    "command", [lambda a: a.deposit(Decimal(1)), lambda a: a.withdraw(Decimal(1)), lambda a: a.close()]
)
def test_commands_on_an_account_never_opened_are_refused(command):
    """An Account with no AccountOpened in its past refuses every command."""
    given(Account).when(command).then_raises(AccountNotOpened, "not been opened")


# -- errors and events ---------------------------------------------------------

ERRORS: list[type[LedgerError]] = [
    LedgerError,
    InvalidAmount,
    UnknownCurrency,
    InvalidOwnerName,
    InvalidDescription,
    InvalidAccountId,
    InsufficientFunds,
    BalanceLimitExceeded,
    AccountNotOpened,
    AccountIsClosed,
    AccountNotEmpty,
]


def test_every_ledger_error_is_a_domain_error_with_a_unique_kebab_case_code():
    """Each rule's error derives from LedgerError and DomainError and has its own stable code."""
    codes = [cls.code for cls in ERRORS]
    assert len(set(codes)) == len(codes)
    for cls in ERRORS:
        assert issubclass(cls, LedgerError)
        assert issubclass(cls, DomainError)
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", cls.code), cls
        assert cls.title
    assert InsufficientFunds.code == "insufficient-funds"
    assert AccountIsClosed.code == "account-closed"


@pytest.mark.parametrize(
    "error",
    [
        InsufficientFunds(Decimal("1.00"), Decimal("2.00"), "USD"),
        BalanceLimitExceeded(Decimal("1.00"), Decimal("2.00"), MAX_BALANCE, "USD"),
        AccountIsClosed("0190f0e5-7c9d-7c3a-8d1e-0123456789ab"),
        AccountNotEmpty("0190f0e5-7c9d-7c3a-8d1e-0123456789ab", Decimal("1.00"), "USD"),
    ],
)
def test_errors_with_data_survive_pickling(error):
    """Errors carrying numbers pickle (for process pools) with their message and data intact."""
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


@pytest.mark.parametrize(
    ("cls", "name"),
    [
        (AccountOpened, "AccountOpened"),
        (MoneyDeposited, "MoneyDeposited"),
        (MoneyWithdrawn, "MoneyWithdrawn"),
        (AccountClosed, "AccountClosed"),
    ],
)
def test_events_are_registered_under_stable_names(cls, name):
    """Each event class is registered under its stable name at schema version 1."""
    entry = default_registry.of_class(cls)
    assert (entry.name, entry.version) == (name, 1)


def test_amounts_are_stored_as_decimal_strings_and_read_back_exactly():
    """The codec writes an amount as a JSON string and reads back the same Decimal, scale included."""
    codec = EventCodec()
    name, version, payload = codec.encode_event(MoneyDeposited(Decimal("0.10"), "round-up"))
    assert payload == b'{"amount":"0.10","description":"round-up"}'
    back = codec.decode_event(name, version, payload)
    assert back == MoneyDeposited(Decimal("0.10"), "round-up")
    assert str(back.amount) == "0.10"


# -- parse_amount --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        ("12.50", "EUR", "12.50"),
        ("12.5", "EUR", "12.50"),
        (" 7 ", "EUR", "7.00"),
        ("+7", "EUR", "7.00"),
        ("1.000", "USD", "1.00"),
        ("0.1", "USD", "0.10"),
        ("007", "USD", "7.00"),
        ("999999999.99", "USD", "999999999.99"),
        ("5000", "JPY", "5000"),
        ("1.234", "KWD", "1.234"),
        (5, "USD", "5.00"),
        (Decimal("2.5"), "USD", "2.50"),
    ],
)
def test_parse_amount_reads_text_ints_and_decimals_exactly(value, currency, expected):
    """parse_amount turns decimal text, ints and Decimals into the exact Decimal at the currency's scale."""
    amount = parse_amount(value, currency)
    assert isinstance(amount, Decimal)
    assert str(amount) == expected


def test_parse_amount_is_exact_whatever_the_decimal_context():
    """Reading text never rounds, even under a decimal context of 3 digits."""
    with decimal.localcontext(prec=3):
        assert str(parse_amount("123456789.12", "USD")) == "123456789.12"


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "1e3",
        "1E3",
        "NaN",
        "Infinity",
        "inf",
        "1_000",
        "1,000",
        ".5",
        "5.",
        "0x10",
        "\u0661\u0662",
        "1 000",
        "--1",
    ],
)
def test_parse_amount_refuses_text_that_is_not_plain_decimal_notation(text):
    """Exponents, separators, special values and non-ASCII digits are refused."""
    with pytest.raises(InvalidAmount, match="is not an amount"):
        parse_amount(text, "USD")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("-5", "greater than zero"),
        ("0", "greater than zero"),
        ("1.001", "at most 2 decimal places"),
        ("1000000000.01", "at most 1000000000"),
        (0.1, "not a float"),
        (True, "a number, got True"),
        (None, "Decimal, got NoneType"),
    ],
)
def test_parse_amount_refuses_invalid_amounts(value, match):
    """parse_amount applies every amount rule and refuses floats and bools."""
    with pytest.raises(InvalidAmount, match=match):
        parse_amount(value, "USD")


def test_parse_amount_keeps_its_message_short_for_huge_input():
    """A megabyte of digits is refused with a message that quotes only its start."""
    with pytest.raises(InvalidAmount) as info:
        parse_amount("9" * 1_000_000, "USD")
    assert len(str(info.value)) < 200


def test_parse_amount_refuses_an_unknown_currency():
    """The currency must be known before an amount can be checked against it."""
    with pytest.raises(UnknownCurrency):
        parse_amount("1.00", "ZZZ")


# -- format_money --------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (Decimal(1), "USD", "1.00"),
        (Decimal("1.5"), "USD", "1.50"),
        (Decimal("1.500"), "USD", "1.50"),
        (Decimal(100), "JPY", "100"),
        (Decimal("100.00"), "JPY", "100"),
        (Decimal("1.5"), "BHD", "1.500"),
        (Decimal("1.5"), "CLF", "1.5000"),
        (Decimal(-5), "EUR", "-5.00"),
        (Decimal("-0.00"), "EUR", "0.00"),
        (Decimal("1E+3"), "EUR", "1000.00"),
        (MAX_BALANCE, "EUR", "1000000000000000.00"),
        (7, "USD", "7.00"),
        (Decimal("2.50"), "HRK", "2.50"),
    ],
)
def test_format_money_shows_exactly_the_currency_minor_units(amount, currency, expected):
    """format_money pads or trims zeros to the currency's minor units, with no exponent or separator."""
    assert format_money(amount, currency) == expected


@pytest.mark.parametrize(
    ("amount", "currency", "match"),
    [
        (Decimal("1.005"), "USD", "more decimal places than USD's 2"),
        (Decimal("0.5"), "JPY", "more decimal places than JPY's 0"),
        (Decimal("NaN"), "USD", "cannot format"),
        (Decimal("Infinity"), "USD", "cannot format"),
        (1.5, "USD", "takes a Decimal, got float"),
        (True, "USD", "takes a Decimal, got bool"),
    ],
)
def test_format_money_never_rounds_and_refuses_non_amounts(amount, currency, match):
    """Amounts the currency cannot show exactly, non-finite values and floats are refused."""
    with pytest.raises(InvalidAmount, match=match):
        format_money(amount, currency)


def test_format_money_refuses_an_unknown_currency():
    """Formatting in a code that is not a currency raises UnknownCurrency."""
    with pytest.raises(UnknownCurrency):
        format_money(Decimal(1), "usd")


# -- currencies ----------------------------------------------------------------


def test_the_currency_table_holds_the_active_codes_with_their_minor_units():
    """The table covers ISO 4217's active currencies, with the known exceptions to two decimals."""
    assert len(ACTIVE) >= 150
    assert all(re.fullmatch(r"[A-Z]{3}", code) for code in ACTIVE)
    assert set(ACTIVE.values()) == {0, 2, 3, 4}
    assert {code for code, units in ACTIVE.items() if units == 3} == {
        "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"
    }  # fmt: skip
    assert {code for code, units in ACTIVE.items() if units == 4} == {"CLF", "UYW"}
    assert {"JPY", "KRW", "VND", "ISK", "CLP", "XOF", "XAF"} <= {c for c, u in ACTIVE.items() if u == 0}
    assert ACTIVE["USD"] == ACTIVE["EUR"] == ACTIVE["GBP"] == 2
    assert set(NAMES) == set(ACTIVE) | set(WITHDRAWN)


def test_the_currency_table_leaves_out_metals_test_codes_and_units_of_account():
    """Codes that are not money an account holds are not currencies here."""
    for code in ("XAU", "XAG", "XPT", "XPD", "XTS", "XXX", "XDR", "XBA", "XBB", "XBC", "XBD", "XSU", "XUA"):
        assert code not in ACTIVE
        assert code not in WITHDRAWN


def test_withdrawn_currencies_are_known_only_when_asked_for():
    """A withdrawn code has minor units for existing accounts but is not an active currency."""
    assert not set(WITHDRAWN) & set(ACTIVE)
    assert minor_units("HRK", allow_withdrawn=True) == 2
    with pytest.raises(UnknownCurrency, match="no longer"):
        minor_units("HRK")


@pytest.mark.parametrize("code", ["usd", "Usd", " USD", "USD ", "US", "USDX", "", b"USD", None])
def test_check_currency_is_strict(code):
    """Only the exact upper-case three-letter str of an active code is accepted."""
    with pytest.raises(UnknownCurrency):
        check_currency(code)


def test_check_currency_returns_the_code():
    """An active code is returned unchanged."""
    assert check_currency("CHF") == "CHF"
