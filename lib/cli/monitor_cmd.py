"""CLI: monitor commands (registered in lib.cli._register)."""
