# The two things a newcomer does on a fresh machine.
#   make chat   install, fetch the default model pair if needed, and start chatting
#   make test   install, fetch the real test pair, lint, type-check and run every test

.PHONY: install install-dev chat test lint

install:
	scripts/install.sh

install-dev:
	scripts/install.sh --dev

chat: install
	.venv/bin/edgespec chat

lint: install-dev
	.venv/bin/ruff check edgespec tests scripts examples
	.venv/bin/ruff format --check edgespec tests scripts examples
	.venv/bin/mypy

test: lint
	.venv/bin/python scripts/fetch_test_models.py
	.venv/bin/pytest
