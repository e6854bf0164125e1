"""After release: shadow-traffic loads (`shadow`), canary checks of a live log against a policys
triggers (`canary`, `canary_stats`), and the pinned-model monitor (`monitor`, `entities`)."""
