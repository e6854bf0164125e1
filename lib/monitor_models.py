"""Tables for monitor (registered by lib.db.get_engine)."""
