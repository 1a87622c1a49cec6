"""`POST /v1/feedback` of the OpenAI front: validation, the feedback file, and the flag that turns it on."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from router_frontend.openai_front import Feedback, FrontError, create_app, feedback_record, parse_args
from router_launcher.serve import free_ports

WHEN = datetime(2026, 11, 30, 1, 2, 3, tzinfo=UTC)


def test_feedback_record_has_one_label_and_the_time():
    assert feedback_record(Feedback(id="chatcmpl-1", score=0.25), WHEN) == {
        "id": "chatcmpl-1", "score": 0.25, "received": "2026-11-30T01:02:03.000Z",
    }  # fmt: skip
    assert feedback_record(Feedback(id="chatcmpl-1", correct=False), WHEN)["correct"] is False
    for body, param in (({"id": "a"}, "score"), ({"id": "a", "score": 1, "correct": True}, "correct")):
        with pytest.raises(FrontError) as info:
            feedback_record(Feedback.model_validate(body), WHEN)
        assert info.value.status == 400 and info.value.param == param and "one of" in info.value.message


@pytest.fixture
def app_with_feedback(tmp_path: Path) -> tuple[TestClient, Path]:
    (port,) = free_ports(1)  # no Triton there: feedback does not need it
    path = tmp_path / "feedback.jsonl"
    with TestClient(create_app(f"127.0.0.1:{port}", timeout_s=5, feedback_file=path)) as client:
        yield client, path


def test_feedback_is_appended_and_acknowledged(app_with_feedback) -> None:
    client, path = app_with_feedback
    response = client.post("/v1/feedback", json={"id": "chatcmpl-abc", "score": 0.5})
    assert response.status_code == 200
    assert response.json() == {"object": "feedback", "id": "chatcmpl-abc", "received": True}
    assert client.post("/v1/feedback", json={"id": "chatcmpl-def", "correct": True}).status_code == 200
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["id"], x.get("score"), x.get("correct")) for x in lines] == [
        ("chatcmpl-abc", 0.5, None), ("chatcmpl-def", None, True),
    ]  # fmt: skip
    assert all(x["received"].endswith("Z") for x in lines)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"score": 0.5}, "id"),
        ({"id": "", "score": 0.5}, "id"),
        ({"id": "a", "score": 1.5}, "score"),
        ({"id": "a", "score": -0.1}, "score"),
        ({"id": "a", "score": "0.5"}, "score"),
        ({"id": "a", "score": True}, "score"),
        ({"id": "a", "correct": "yes"}, "correct"),
        ({"id": "a", "correct": 1}, "correct"),
        ({"id": "a"}, "score"),
        ({"id": "a", "score": 1, "correct": True}, "correct"),
        ({"id": "a", "score": 1, "comment": "x"}, "comment"),
    ],
)
def test_bad_feedback_is_a_400_naming_the_field(app_with_feedback, body, param) -> None:
    client, path = app_with_feedback
    response = client.post("/v1/feedback", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and param in error["message"]
    assert not path.exists()  # nothing was stored


def test_feedback_is_off_without_a_file() -> None:
    (port,) = free_ports(1)
    with TestClient(create_app(f"127.0.0.1:{port}", timeout_s=5)) as client:
        response = client.post("/v1/feedback", json={"id": "a", "score": 1})
    assert response.status_code == 404 and "--feedback-file" in response.json()["error"]["message"]


def test_an_unwritable_feedback_file_is_a_500(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    with TestClient(create_app(f"127.0.0.1:{port}", timeout_s=5, feedback_file=tmp_path / "no" / "f.jsonl")) as c:
        response = c.post("/v1/feedback", json={"id": "a", "score": 1})
    assert response.status_code == 500 and response.json()["error"]["message"].startswith("feedback not stored")


def test_feedback_file_flag_and_environment(monkeypatch) -> None:
    monkeypatch.delenv("ROUTER_FEEDBACK_FILE", raising=False)
    assert parse_args([]).feedback_file is None
    assert parse_args(["--feedback-file", "/x/f.jsonl"]).feedback_file == Path("/x/f.jsonl")
    monkeypatch.setenv("ROUTER_FEEDBACK_FILE", "/env/f.jsonl")
    assert parse_args([]).feedback_file == Path("/env/f.jsonl")
