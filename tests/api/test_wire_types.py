"""Wire types: ids as the clients recognise them, the envelope, error codes."""

from __future__ import annotations

from bosun.api import errors
from bosun.api.envelope import API_VERSION, envelope
from bosun.api.ids import looks_like_id, new_id


def test_new_ids_are_32_lowercase_hex_and_recognised() -> None:
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100
    for value in ids:
        assert len(value) == 32 and value == value.lower()
        assert looks_like_id(value)
    assert not looks_like_id("default")
    assert not looks_like_id("my-queue-name")


def test_envelope_success_and_error() -> None:
    ok = envelope("tasks.get_all", "2.5", "trx1", {"tasks": []})
    assert ok["meta"]["result_code"] == 200 and ok["meta"]["result_msg"] == "OK"
    assert ok["meta"]["endpoint"] == {"name": "tasks.get_all", "requested_version": "2.5",
                                      "actual_version": API_VERSION}
    assert ok["data"] == {"tasks": []}
    err = envelope("tasks.get_by_id", None, "trx2", None,
                   errors.InvalidTaskId("invalid task id: x", id="x"))
    meta = err["meta"]
    assert (meta["result_code"], meta["result_subcode"]) == (400, 101)
    assert meta["result_msg"] == "invalid task id: x"
    assert meta["error_data"] == {"id": "x"}
    assert meta["endpoint"]["requested_version"] == API_VERSION
    assert err["data"] == {}


def test_error_classes_carry_clearml_codes() -> None:
    assert (errors.InvalidQueueId().code, errors.InvalidQueueId().subcode) == (400, 701)
    assert (errors.InvalidToken().code, errors.InvalidToken().subcode) == (401, 30)
    assert errors.InternalError().code == 500
    assert str(errors.MissingRequiredFields("missing 'task'")) == "missing 'task' (400/11)"
