"""Upgrade Review library: all logic, no Streamlit. See docs/architecture.md."""
