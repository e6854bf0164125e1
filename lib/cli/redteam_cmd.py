"""CLI: redteam commands (registered in lib.cli._register)."""
