"""Fixtures' building blocks shared by the test packages (servers, tiny models)."""
