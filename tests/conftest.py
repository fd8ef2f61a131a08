"""Shared test setup. Backend-specific fixtures live beside their tests (tests/postgres/)."""

import pytest

# The contract suite ships inside the package, where pytest does not rewrite asserts by
# default; without this its failures would show a bare AssertionError, not the values.
pytest.register_assert_rewrite("eventvault.testing.contract")
