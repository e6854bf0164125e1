"""Data in: reading tabular files (`tables`), coercing and validating fields (`fields`), golden datasets
(`golden`), recorded comparisons from other tools and logs (`loaders/`), portable recordings (`recording`)
and the offline demo (`demo`)."""
