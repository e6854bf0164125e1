"""Review: reviewer settings (`settings`), the per-output checks (`checks/`), the pure check pipeline and
its store key (`compute`, `tokens`), checked pairs kept in the check store (`checked`), paired statistics
(`stats`), the report JSON (`report`), comparisons (`comparisons`), the case browser (`browse`) and the
"what changed most" lists (`changed_most`)."""
