# Shortcuts for developers; README.md's two commands need nothing but Python.
.PHONY: help run test lint format typecheck bench translations

help:  ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

run:  ## Run web, worker, beat and mail capture on the embedded default
	./scripts/run

test:  ## Run the whole suite on SQLite and on PostgreSQL + Redis
	./scripts/test

lint:  ## ruff check and format check
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:  ## ruff format and autofix
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

typecheck:  ## mypy on the domain packages
	.venv/bin/mypy

bench:  ## Time a 1,000-recipient send on both stacks
	.venv/bin/python bench/send_1000.py --stack sqlite
	.venv/bin/python bench/send_1000.py --stack postgres

translations:  ## Extract the public pages' strings, update the fr/ar catalogues, compile them
	.venv/bin/pybabel extract -F babel.cfg -k lazy_gettext -k _l -c Translators: --add-location=file \
		--ignore-dirs=".* ._ instance tests bench migrations static worker docs" \
		--project=Circulars -o translations/messages.pot .
	for lang in fr ar; do \
		if [ -f translations/$$lang/LC_MESSAGES/messages.po ]; then \
			.venv/bin/pybabel update --no-fuzzy-matching -i translations/messages.pot -d translations -l $$lang; \
		else .venv/bin/pybabel init -i translations/messages.pot -d translations -l $$lang; fi; \
	done
	.venv/bin/pybabel compile --statistics -d translations
