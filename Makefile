# Shortcuts; the scripts are the source of truth.
.PHONY: test fuzz check

test:
	scripts/test

# Coverage-guided fuzzing, FUZZ_SECONDS per parser (default 600); FUZZ_SAVE=1 keeps new inputs.
fuzz:
	scripts/fuzz $(FUZZ_SECONDS)

check:
	ruff check . && ruff format --check . && mypy
