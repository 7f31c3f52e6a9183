"""Helpers the tests share: small networks, model zoos, the surgery check, services, the app runner."""
