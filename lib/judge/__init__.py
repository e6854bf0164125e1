"""LLM-as-judge (issue #7): pinned judge configuration, pointwise rubric and pairwise judgements."""
