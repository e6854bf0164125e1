"""Production logs that keep the provider's whole response object as the output (OpenAI chat completions,
Responses results, Anthropic messages): the answer text is taken from it, the shape is named in a note,
and any other object stays a JSON answer (it crashed the load with a database binding error before)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import Session, select

from lib.data.answers import answer_text
from lib.data.loaders import LoadMapping, load_recorded
from lib.review.checked import checked_frame
from lib.store.columns import to_json
from lib.store.entities import Output

REFUSAL = "I'm sorry, but I can't help with that."


def _completion(model: str, content: str | None, **message: object) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, **message},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}}


def _log() -> bytes:
    """An OpenAI-style chat log: one line per call, the whole response object under `response`."""
    lines = []
    for i in range(6):
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"What is {i}+{i}?"}]
        for model, answer in (("gpt-4o", str(2 * i)), ("gpt-4.1", REFUSAL if i < 3 else str(2 * i))):
            lines.append({"request_id": f"req-{i}", "model": model, "messages": messages,
                          "response": _completion(model, answer), "latency_ms": 500})
    return "\n".join(json.dumps(line) for line in lines).encode()


def test_a_chat_log_with_response_objects_loads_with_the_answer_texts(engine) -> None:
    mapping = LoadMapping(input_col="messages", output_col="response", baseline="gpt-4o", candidate="gpt-4.1")
    result = load_recorded(engine, _log(), "calls.jsonl", "chat-log", "long", mapping)
    assert result.n_pairs == 6
    assert any("choices[0].message.content" in w for w in result.warnings + result.notes)
    with Session(engine) as s:
        texts = sorted({o.text for o in s.exec(select(Output))})
    assert REFUSAL in texts and "10" in texts and not any("chatcmpl" in t for t in texts)
    frame = checked_frame(engine, "chat-log")
    assert int(frame["c_refused"].sum()) == 3 and int(frame["b_refused"].sum()) == 0


@pytest.mark.parametrize(("value", "text"), [
    (_completion("m", "Paris"), "Paris"),
    (_completion("m", None, tool_calls=[{"id": "c1", "type": "function",
                                         "function": {"name": "f", "arguments": "{}"}}]),
     to_json([{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}])),
    (_completion("m", [{"type": "text", "text": "Par"}, {"type": "text", "text": "is"}]), "Paris"),
    ({"choices": [{"text": "Paris", "index": 0}]}, "Paris"),
    ({"object": "response", "output": [{"type": "message", "content": [{"type": "output_text", "text": "Paris"}]}]},
     "Paris"),
    ({"type": "message", "role": "assistant", "content": [{"type": "text", "text": "Paris"}]}, "Paris"),
    ({"role": "assistant", "content": "Paris"}, "Paris"),
    ({"city": "Paris", "country": "France"}, to_json({"city": "Paris", "country": "France"})),  # a JSON answer
    ([1, 2], to_json([1, 2])),
    (42, "42"),
    ("Paris", "Paris"),
    (None, None),
])
def test_answer_text_of_each_shape(value: object, text: str | None) -> None:
    assert answer_text(value)[0] == text


def test_the_timeline_log_import_takes_answers_from_response_objects(engine, tmp_path: Path) -> None:
    from lib.release.log_import import import_log_file

    rows = [{"timestamp": f"2026-11-01T00:{i:02d}:00Z", "model": "gpt-4.1", "response": _completion("gpt-4.1", REFUSAL)}
            for i in range(5)]
    path = tmp_path / "prod.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    import_log_file(engine, path, "prod", LoadMapping(output_col="response"))
    from sqlalchemy import text

    with engine.connect() as conn:
        stored = conn.execute(text("SELECT output_text, refused FROM logrecord")).all()
    assert stored and all(t == REFUSAL and refused for t, refused in stored)


def test_object_inputs_of_recorded_logs_are_kept(engine) -> None:
    """A Langfuse item's input is an object: its `messages` are the chat, other objects their JSON text."""
    lines = []
    for i in range(4):
        chat = {"messages": [{"role": "user", "content": f"q{i}"}]}
        source = chat if i % 2 else {"question": f"q{i}", "lang": "en"}
        for model, answer in (("old", f"a{i}"), ("new", f"b{i}")):
            lines.append({"id": f"item-{i}", "model": model, "input": source, "output": answer})
    data = "\n".join(json.dumps(line) for line in lines).encode()
    result = load_recorded(engine, data, "items.jsonl", "lf", "long", LoadMapping(baseline="old", candidate="new"))
    assert result.n_pairs == 4
    from sqlalchemy import text

    with engine.connect() as conn:
        inputs = dict(conn.execute(text('SELECT case_key, input_text FROM "case"')).all())
    assert inputs["item-1"] == "user: q1"
    assert json.loads(inputs["item-0"]) == {"question": "q0", "lang": "en"}


def test_a_golden_dataset_still_refuses_an_object_input_without_messages(engine) -> None:
    from lib.data.golden import import_dataset
    from lib.errors import DatasetImportError

    with pytest.raises(DatasetImportError, match="must be a string or a list of"):
        import_dataset(engine, b'{"id": "a", "input": {"question": "q"}}\n', "g.jsonl", "g")
