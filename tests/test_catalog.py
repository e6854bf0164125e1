"""lib/catalog: the offline model map, overrides, key presence, discovery, the connection check and the radar."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from lib.catalog.catalogue import SAMPLE_SPEC, catalogue, family_of, version_date
from lib.catalog.connection import test_connection as check_connection
from lib.catalog.discovery import DiscoveryError, discover_models
from lib.catalog.keys import key_status
from lib.catalog.overrides import OverrideFileError, load_overrides
from lib.catalog.radar import deprecations, models_in_use, within

TODAY = date(2026, 12, 6)
LONG_CSV = ("request_id,model,input,output,prompt_tokens,completion_tokens\n"
            "r1,gpt-4o-2024-08-06,hi,hello,10,5\nr1,gpt-4.1-2025-04-14,hi,hello there,10,7\n")


def load_long(engine, tmp_path: Path, name: str = "upgrade", text: str = LONG_CSV,
              baseline: str = "gpt-4o-2024-08-06", candidate: str = "gpt-4.1-2025-04-14") -> None:
    from lib.data.loaders import LoadMapping, load_recorded

    load_recorded(engine, text.encode(), "traffic.csv", name, fmt="long",
                  mapping=LoadMapping(baseline=baseline, candidate=candidate))


# ---- the map ---------------------------------------------------------------------------------------
def test_a_dated_openai_model_comes_with_provider_prices_context_and_deprecation() -> None:
    info = catalogue().info("gpt-4o-2024-08-06")
    assert (info.provider, info.family, info.version_date) == ("openai", "gpt-4o", date(2024, 8, 6))
    assert info.deprecation_date == date(2027, 1, 14)
    assert info.input_cost_per_token == pytest.approx(2.5e-6) and info.output_cost_per_token == pytest.approx(1e-5)
    assert info.max_input_tokens == 128000 and info.source == "litellm bundled model map"


def test_the_sample_spec_entry_is_not_a_model_and_a_provider_prefix_still_finds_the_entry() -> None:
    cat = catalogue()
    assert SAMPLE_SPEC not in cat.models and len(cat.models) > 1000
    assert cat.lookup("openai/gpt-4o-2024-08-06").model == "gpt-4o-2024-08-06"


def test_a_model_without_prices_has_unknown_prices_never_zero() -> None:
    info = catalogue().info("claude-3-5-sonnet-20240620")
    assert info.input_cost_per_token is None and info.output_cost_per_token is None and not info.priced
    custom = catalogue().info("openai/my-local-model")
    assert custom.provider == "openai" and custom.input_cost_per_token is None


@pytest.mark.parametrize(("name", "expected"), [
    ("gpt-4o-2024-08-06", date(2024, 8, 6)), ("claude-3-5-sonnet-20240620", date(2024, 6, 20)),
    ("mistral/mistral-large-2407", date(2024, 7, 1)), ("gpt-4-0613", None), ("gpt-4o", None)])
def test_version_dates_are_parsed_from_names(name: str, expected: date | None) -> None:
    assert version_date(name) == expected


def test_families_strip_prefix_and_version() -> None:
    assert family_of("openai/gpt-4o-2024-11-20") == "gpt-4o" == family_of("gpt-4o")
    assert family_of("claude-3-5-sonnet-20241022") == "claude-3-5-sonnet" and family_of("gpt-4-0613") == "gpt-4"


def test_versions_of_a_family_sort_by_date_with_undated_aliases_last() -> None:
    names = [m.model for m in catalogue().family("gpt-4o", "openai")]
    dated = [n for n in names if version_date(n)]
    assert dated == sorted(dated, key=version_date) and "gpt-4o-2024-05-13" in dated
    assert names[-1] == "gpt-4o"


def test_candidates_are_newer_same_provider_models_and_never_older_versions() -> None:
    cands = [m.model for m in catalogue().candidates("gpt-4o-2024-08-06")]
    assert "gpt-4o-2024-11-20" in cands and "gpt-4o-2024-05-13" not in cands
    infos = [catalogue().info(c) for c in cands]
    assert all(i.provider == "openai" for i in infos)
    assert all(i.version_date is None or i.version_date > date(2024, 8, 6) for i in infos)


def test_search_ranks_the_exact_name_first_and_matches_every_word() -> None:
    hits = catalogue().search("gpt-4o", limit=5)
    assert hits[0].model == "gpt-4o" and all("gpt-4o" in h.model for h in hits)
    both = catalogue().search("claude sonnet", limit=20)
    assert both and all("claude" in h.model.lower() and "sonnet" in h.model.lower() for h in both)
    assert catalogue().search("no-such-model-xyz") == []


# ---- overrides ------------------------------------------------------------------------------------
def test_the_override_file_takes_precedence_and_is_named(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('["gpt-4o-2024-08-06"]\ndeprecation_date = 2026-12-20\ninput_cost_per_token = 1e-6\n'
                    '["openai/house-model"]\ninput_cost_per_token = 1e-7\noutput_cost_per_token = 2e-7\n')
    cat = catalogue(str(path))
    info = cat.info("gpt-4o-2024-08-06")
    assert info.deprecation_date == date(2026, 12, 20) and info.input_cost_per_token == 1e-6
    assert info.output_cost_per_token == pytest.approx(1e-5)  # not overridden: the map's
    assert str(path) in info.source and "deprecation_date" in info.source and str(path) in cat.source
    assert cat.info("openai/house-model").priced  # a model only the file knows


@pytest.mark.parametrize(("body", "fragment"), [
    ('["gpt-4o"]\nprice = 1\n', "field 'price'"), ('["gpt-4o"]\ndeprecation_date = "soon"\n', "expected a date"),
    ('["gpt-4o"]\ninput_cost_per_token = -1\n', "expected a number >= 0"), ("not toml [", "not a readable TOML")])
def test_a_bad_override_file_is_an_error_naming_the_file(tmp_path: Path, body: str, fragment: str) -> None:
    path = tmp_path / "models.toml"
    path.write_text(body)
    with pytest.raises(OverrideFileError) as err:
        load_overrides(str(path))
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_a_missing_override_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OverrideFileError, match="no such file"):
        load_overrides(str(tmp_path / "nope.toml"))


# ---- keys -----------------------------------------------------------------------------------------
def test_key_presence_from_environment_never_shows_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    status = key_status("gpt-4o")
    assert status.present and status.where == "environment" and "sk-secret-value" not in repr(status) + status.message
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    missing = key_status("anthropic/claude-3-5-sonnet-20240620", secrets_path=Path("/nonexistent"))
    assert not missing.present and "ANTHROPIC_API_KEY" in missing.message


def test_key_presence_from_the_app_secrets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('ANTHROPIC_API_KEY = "sk-ant-secret"\n')
    status = key_status("anthropic/claude-3-5-sonnet-20240620", secrets_path=secrets)
    assert status.present and status.where == "app secrets" and "sk-ant-secret" not in status.message


def test_a_local_server_needs_no_key(llm_server) -> None:
    status = key_status("openai/local-small", llm_server.url)
    assert status.present and status.message == "no key needed"


# ---- discovery ------------------------------------------------------------------------------------
def test_discovery_lists_the_servers_models(llm_server) -> None:
    llm_server.listed_models = ["qwen-7b", "llama-3-8b"]
    assert discover_models(llm_server.url) == ["llama-3-8b", "qwen-7b"]


def test_discovery_errors_are_plain(llm_server) -> None:
    with pytest.raises(DiscoveryError, match="HTTP 404"):
        discover_models(llm_server.url.removesuffix("/v1") + "/nothing")
    with pytest.raises(DiscoveryError, match="cannot connect"):
        discover_models("http://127.0.0.1:9/v1", timeout=2)
    with pytest.raises(DiscoveryError, match="must start with http"):
        discover_models("localhost:8000")


# ---- connection check -----------------------------------------------------------------------------
def test_a_good_connection_reports_latency_served_model_and_fingerprint(llm_server) -> None:
    llm_server.set_fingerprint("local-small", "fp_test123")
    llm_server.set_served_model("local-small", "local-small-2026-11-01")
    result = check_connection("openai/local-small", llm_server.url)
    assert result.ok and result.served_model == "local-small-2026-11-01" and result.fingerprint == "fp_test123"
    assert 0 < result.latency_s < 10 and llm_server.calls(model="local-small") == 1  # one tiny request


@pytest.mark.parametrize(("fault", "problem", "words"), [
    ("401", "key", "missing or invalid"), ("404", "access", "cannot use this model"),
    ("429", "quota", "quota"), ("500", "server", "try again later")])
def test_a_failed_connection_says_why_in_plain_words(llm_server, fault: str, problem: str, words: str) -> None:
    llm_server.add_fault(fault)
    result = check_connection("openai/local-small", llm_server.url)
    assert not result.ok and result.problem == problem and words in result.message
    assert result.status == int(fault) and llm_server.calls() == 1  # no retries: one request


def test_a_slow_server_is_a_timeout(llm_server) -> None:
    llm_server.add_fault("slow", delay=5)
    result = check_connection("openai/local-small", llm_server.url, timeout=0.5)
    assert not result.ok and result.problem == "timeout" and "0.5 s" in result.message


def test_an_unreachable_server_and_a_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    down = check_connection("openai/x", "http://127.0.0.1:9/v1", timeout=5)
    assert not down.ok and down.problem == "unreachable"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir("/")  # no .streamlit/secrets.toml here
    nokey = check_connection("gpt-4o-mini")
    assert not nokey.ok and nokey.problem == "key" and "OPENAI_API_KEY" in nokey.message


# ---- radar ----------------------------------------------------------------------------------------
def test_the_radar_lists_every_model_in_use_with_days_left(engine, tmp_path: Path) -> None:
    load_long(engine, tmp_path)
    used = {u.model: u.roles for u in models_in_use(engine)}
    assert used == {"gpt-4o-2024-08-06": ("baseline",), "gpt-4.1-2025-04-14": ("candidate",)}
    rows = deprecations(engine, today=TODAY)
    assert {r.model: r.days_left for r in rows} == {"gpt-4o-2024-08-06": 39, "gpt-4.1-2025-04-14": 39}
    assert len(within(rows, 60)) == 2 and within(rows, 30) == []


def test_the_radar_uses_the_override_date_and_names_the_file(engine, tmp_path: Path) -> None:
    load_long(engine, tmp_path)
    path = tmp_path / "models.toml"
    path.write_text('["gpt-4o-2024-08-06"]\ndeprecation_date = "2026-12-16"\n')
    rows = {r.model: r for r in deprecations(engine, today=TODAY, cat=catalogue(str(path)))}
    assert rows["gpt-4o-2024-08-06"].days_left == 10 and str(path) in rows["gpt-4o-2024-08-06"].source


def test_the_map_read_from_litellms_file_equals_litellm_model_cost_on_every_field_used() -> None:
    """The catalogue reads litellm's bundled file without importing litellm; it must serve what
    `litellm.model_cost` serves (same names, same provider, mode, context, prices, dates, successor)."""
    from lib.catalog.catalogue import _bundled_map
    from lib.run.llm import litellm_module

    fields = ("litellm_provider", "mode", "max_input_tokens", "input_cost_per_token", "output_cost_per_token",
              "deprecation_date", "successor_model")
    ours, _ = _bundled_map()
    theirs = litellm_module().model_cost
    assert set(ours) == set(theirs) - {SAMPLE_SPEC}
    differ = [k for k in ours if any(ours[k].get(f) != theirs[k].get(f) for f in fields)]
    assert differ == []


@pytest.mark.slow
def test_searching_the_map_does_not_import_litellm() -> None:
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import sys; from lib.catalog.catalogue import catalogue; "
            "assert catalogue().info('gpt-4o-2024-08-06').deprecation_date; print('litellm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_the_radar_counts_monitored_models_and_judges(engine, llm_server) -> None:
    from test_judge import JUDGE, judge, load_comparison, script_defaults
    from test_monitor import make_dataset, point

    make_dataset(engine, n=3)
    point(engine, llm_server)  # a monitor series' baseline snapshot of openai/pinned
    load_comparison(engine, n=2)
    script_defaults(llm_server)
    judge(engine, llm_server)
    used = {u.model: u.roles for u in models_in_use(engine)}
    assert used["openai/pinned"] == ("monitored",) and used[JUDGE] == ("judge",)
    rows = {r.model: r for r in deprecations(engine, today=TODAY)}
    assert rows[JUDGE].used_by == ["judge"] and rows["openai/pinned"].deprecation_date is None
