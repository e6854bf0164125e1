"""CLI: judge commands (registered in lib.cli._register)."""
