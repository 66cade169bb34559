"""proxyd: a censorship-aware local forwarding proxy daemon."""

__version__ = "0.1.0"
