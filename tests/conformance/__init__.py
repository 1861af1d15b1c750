"""The conformance suite: the README contract, run against every access mode
(see access.py). A package, so its conftest does not shadow tests/conftest.py."""
