"""CLI: canary commands (registered in lib.cli._register)."""
