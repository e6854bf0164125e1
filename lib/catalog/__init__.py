"""The model catalogue: what is known about a model before (and after) it is called.

Owns litellm's bundled model map read offline (`catalogue`: provider, family, version date, context
window, prices, deprecation date; search, versions by date, candidate suggestions), the user's override
file (`overrides`: deprecation dates and negotiated prices that take precedence and are named wherever
shown), which providers have a key set (`keys`: never the key itself), models served at an
OpenAI-compatible api_base (`discovery`), the one-request connection check (`connection`), the
deprecation radar over every model in use (`radar`) and the cost of staying vs upgrading (`cost`).
"""
