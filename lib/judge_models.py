"""Tables for judge (registered by lib.db.get_engine)."""
