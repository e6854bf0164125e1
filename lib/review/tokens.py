"""Token counts per model: each side's output (and prompt, against an input token limit) counted with the
tokenizer litellm selects for that side's model."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from lib.review.checks.lengths import METHOD_LITELLM, token_counts
from lib.review.comparisons import comparison_runs
from lib.review.settings import ReviewSettings
from lib.store.entities import INPUT_PLACEHOLDER


@dataclass(frozen=True)
class RunPrompt:
    """What a run's model was sent around each input: its tokenizer counts the prompt and the output."""

    model: str
    system_prompt: str | None = None
    prompt_template: str | None = None

    def render(self, inputs: pd.Series) -> pd.Series:
        """The prompt's text per input: system prompt and templated input (no per-message overhead)."""
        text = inputs.astype("string")
        if self.prompt_template:
            head, _, tail = self.prompt_template.partition(INPUT_PLACEHOLDER)
            text = head + text + tail
        return (self.system_prompt + "\n\n" + text) if self.system_prompt else text


def token_checks(frame: pd.DataFrame, side: str, prompt: RunPrompt | None,
                 settings: ReviewSettings) -> dict[str, pd.Series]:
    """Output and prompt tokens under the side's own model (litellm's tokenizer for it), and whether the
    prompt crosses the settings' input token limit. NA without a run (`prompt`) or without a limit."""
    na_int = pd.Series(pd.NA, index=frame.index, dtype="Int64")
    na_bool = pd.Series(pd.NA, index=frame.index, dtype="boolean")
    if prompt is None:
        return {f"{side}_len_tokens": na_int, f"{side}_input_tokens": na_int, f"{side}_tokens_exact": na_bool,
                f"{side}_input_over_limit": na_bool}
    output = token_counts(frame[f"{side}_text"], prompt.model)
    exact = pd.Series(output.method == METHOD_LITELLM, index=frame.index, dtype="boolean")
    checks = {f"{side}_len_tokens": output.counts, f"{side}_input_tokens": na_int, f"{side}_tokens_exact": exact,
              f"{side}_input_over_limit": na_bool}
    if settings.input_token_limit:  # prompts are counted only against a budget: half the counting otherwise
        prompts = prompt.render(frame["input_text"]).astype(object).where(frame["input_text"].notna())
        inputs = token_counts(prompts, prompt.model).counts
        checks.update({f"{side}_input_tokens": inputs,
                       f"{side}_input_over_limit": (inputs > settings.input_token_limit).astype("boolean")})
    return checks


_PROMPT_SQL = text("SELECT m.model, m.system_prompt, m.prompt_template FROM run r "
                   "JOIN modelconfig m ON m.id = r.config_id WHERE r.id = :run")


def run_prompt(conn: Connection, run_id: int) -> RunPrompt | None:
    row = conn.execute(_PROMPT_SQL, {"run": run_id}).first()
    return RunPrompt(*row) if row is not None else None


def run_prompts(engine: Engine, comparison: str) -> dict[str, RunPrompt | None]:
    """Each side's RunPrompt (`b`, `c`): for `checked_pairs`."""
    b_run, c_run = comparison_runs(engine, comparison)
    with engine.connect() as conn:
        return {"b": run_prompt(conn, b_run), "c": run_prompt(conn, c_run)}


