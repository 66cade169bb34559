"""Installing proxyd from this checkout: a user's venv (scripts/run) and the router service
(scripts/install-router). Standard library only: it runs before any dependency exists."""
