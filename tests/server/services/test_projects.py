"""projects.*: create, get_by_id and get_all (ids, name regex, only_fields, pages)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from bosun.api.errors import ApiError
from bosun.client import Session

HEX = set("0123456789abcdef")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _create(api: Session, name: str, **fields: Any) -> str:
    return api.call("projects.create", {"name": name, **fields})["id"]


def _get(api: Session, project_id: str) -> dict[str, Any]:
    return api.call("projects.get_by_id", {"project": project_id})["project"]


def _error(api: Session, endpoint: str, body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as err:
        api.call(endpoint, body)
    return err.value


def _all(api: Session, **body: Any) -> list[dict[str, Any]]:
    return api.call("projects.get_all", body)["projects"]


def test_create_and_get_by_id(api: Session) -> None:
    name = _unique("proj")
    project_id = _create(api, name, description="what it is", tags=["a"], system_tags=["s"],
                         default_output_destination="s3://bucket/out")
    assert len(project_id) == 32 and set(project_id) <= HEX
    project = _get(api, project_id)
    assert project["id"] == project_id
    assert project["name"] == name
    assert project["basename"] == name
    assert project["description"] == "what it is"
    assert project["tags"] == ["a"] and project["system_tags"] == ["s"]
    assert project["default_output_destination"] == "s3://bucket/out"
    assert project["created"].startswith("20")
    assert project["user"] and project["company"]


def test_create_defaults(api: Session) -> None:
    project = _get(api, _create(api, _unique("bare")))
    assert project["description"] == ""
    assert project["tags"] == [] and project["system_tags"] == []
    assert project["default_output_destination"] == ""


def test_nested_name_has_its_last_part_as_basename(api: Session) -> None:
    root = _unique("root")
    project = _get(api, _create(api, f"{root}/sub/leaf"))
    assert project["name"] == f"{root}/sub/leaf"
    assert project["basename"] == "leaf"


def test_name_is_stripped(api: Session) -> None:
    name = _unique("spaced")
    assert _get(api, _create(api, f"  {name}  "))["name"] == name


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "   "}, {"name": None}])
def test_create_needs_a_name(api: Session, body: dict[str, Any]) -> None:
    err = _error(api, "projects.create", body)
    assert (err.code, err.subcode) == (400, 11)
    assert "name" in err.msg


def test_create_rejects_a_name_of_the_wrong_type(api: Session) -> None:
    err = _error(api, "projects.create", {"name": 7})
    assert (err.code, err.subcode) == (400, 12)


def test_duplicate_name_is_refused(api: Session) -> None:
    name = _unique("dup")
    first = _create(api, name)
    err = _error(api, "projects.create", {"name": name})
    assert (err.code, err.subcode) == (400, 801)
    assert name in err.msg
    assert [p["id"] for p in _all(api, name=f"^{re.escape(name)}$")] == [first]


def test_get_by_id_of_unknown_project(api: Session) -> None:
    err = _error(api, "projects.get_by_id", {"project": uuid.uuid4().hex})
    assert (err.code, err.subcode) == (400, 401)
    assert _error(api, "projects.get_by_id", {}).subcode == 11


def test_get_all_by_id_list(api: Session) -> None:
    ids = [_create(api, _unique("ids")) for _ in range(3)]
    found = _all(api, id=[ids[2], ids[0]])
    assert sorted(p["id"] for p in found) == sorted([ids[0], ids[2]])
    assert [p["id"] for p in _all(api, id=ids[1])] == [ids[1]]
    assert _all(api, id=[uuid.uuid4().hex]) == []


def test_get_all_includes_new_projects_without_filters(api: Session) -> None:
    project_id = _create(api, _unique("listed"))
    assert project_id in {p["id"] for p in _all(api)}


def test_get_all_by_name_regex(api: Session) -> None:
    tag = uuid.uuid4().hex
    names = [f"{tag}-exp.one", f"{tag}-expXone", f"{tag}-other", f"{tag}-exp.one/child"]
    ids = {name: _create(api, name) for name in names}
    # the SDK looks a project up with an anchored, escaped name
    exact = _all(api, name=f"^{re.escape(names[0])}$")
    assert [p["id"] for p in exact] == [ids[names[0]]]
    prefixed = sorted(p["name"] for p in _all(api, name=f"^{tag}-exp"))
    assert prefixed == sorted([names[0], names[1], names[3]])
    assert [p["name"] for p in _all(api, name=f"^{tag}-o")] == [names[2]]
    assert _all(api, name=f"^{tag}-missing") == []


def test_get_all_malformed_regex(api: Session) -> None:
    err = _error(api, "projects.get_all", {"name": "(unclosed"})
    assert (err.code, err.subcode) == (400, 21)


def test_get_all_only_fields(api: Session) -> None:
    name = _unique("only")
    project_id = _create(api, name, description="d")
    found = _all(api, id=[project_id], only_fields=["name", "basename"])
    assert found == [{"id": project_id, "name": name, "basename": name}]
    assert _all(api, id=[project_id], only_fields=["id"]) == [{"id": project_id}]


def test_get_all_pages_in_creation_order(api: Session) -> None:
    tag = uuid.uuid4().hex
    ids = []
    for i in range(5):
        ids.append(_create(api, f"{tag}-{i}"))
    pages = [[p["id"] for p in _all(api, name=f"^{tag}-", page=page, page_size=2)]
             for page in range(4)]
    assert pages == [ids[0:2], ids[2:4], ids[4:5], []]


def test_tasks_land_in_their_project(api: Session) -> None:
    first, second = _create(api, _unique("p1")), _create(api, _unique("p2"))
    task_id = api.call("tasks.create", {"name": "t", "project": first})["id"]
    assert [t["id"] for t in api.call("tasks.get_all", {"project": [first]})["tasks"]] \
        == [task_id]
    assert api.call("tasks.get_all", {"project": [second]})["tasks"] == []


# --- nested projects -------------------------------------------------------------------------


def test_create_of_a_nested_name_makes_the_missing_parents(api: Session) -> None:
    """As ClearML: `a/sub/leaf` makes `a` and `a/sub` when missing; each project's `parent` is
    the one right above it and `path` all those above it, top first."""
    root = _unique("tree")
    leaf = _create(api, f"{root}/sub/leaf")
    by_name = {p["name"]: p for p in _all(api, name=f"^{re.escape(root)}(/|$)")}
    assert sorted(by_name) == [root, f"{root}/sub", f"{root}/sub/leaf"]
    top, sub = by_name[root]["id"], by_name[f"{root}/sub"]["id"]
    assert by_name[root]["parent"] is None and by_name[root]["path"] == []
    assert by_name[root]["basename"] == root and by_name[root]["description"] == ""
    assert by_name[f"{root}/sub"]["parent"] == top
    assert _get(api, leaf)["parent"] == sub and _get(api, leaf)["path"] == [top, sub]
    other = _create(api, f"{root}/sub/other")  # existing parents are reused, not doubled
    assert _get(api, other)["path"] == [top, sub]
    assert len(_all(api, name=f"^{re.escape(root)}(/|$)")) == 4
    err = _error(api, "projects.create", {"name": f"{root}/sub"})
    assert err.subcode == 801  # the parent made on the way is a real project
    assert _get(api, _create(api, f" {root} // spaced / x "))["name"] == f"{root}/spaced/x"


def test_get_all_by_parent_and_shallow_search(api: Session) -> None:
    root = _unique("shallow")
    ids = {name: _create(api, f"{root}{name}") for name in ("/a/x", "/a/y/z", "/b")}
    by_name = {p["name"]: p["id"] for p in _all(api, name=f"^{re.escape(root)}(/|$)")}
    top, a = by_name[root], by_name[f"{root}/a"]

    def names(**body: Any) -> list[str]:
        return sorted(p["name"][len(root):] for p in _all(api, **body))

    # parent alone: every project under it, at any depth
    assert names(parent=[a]) == ["/a/x", "/a/y", "/a/y/z"]
    assert names(parent=top, shallow_search=False) == ["/a", "/a/x", "/a/y", "/a/y/z", "/b"]
    # with shallow_search: the direct children only
    assert names(parent=[a], shallow_search=True) == ["/a/x", "/a/y"]
    assert names(parent=[top, ids["/b"]], shallow_search=True) == ["/a", "/b"]
    # shallow_search alone: the top-level projects
    top_level = {p["id"] for p in _all(api, shallow_search=True)}
    assert top in top_level and a not in top_level and ids["/b"] not in top_level
    assert _all(api, parent=[a], shallow_search=True, page=1, page_size=1)[0]["name"] \
        == f"{root}/a/y"


def test_rename_moves_the_children(api: Session) -> None:
    root = _unique("move")
    leaf = _create(api, f"{root}/old/leaf")
    [old_project] = _all(api, name=f"^{re.escape(root)}/old$")
    old = old_project["id"]
    api.call("projects.update", {"project": old, "name": f"{root}/new/place"})
    assert _get(api, leaf)["name"] == f"{root}/new/place/leaf"
    new_parent = _all(api, name=f"^{re.escape(root)}/new$")[0]["id"]
    assert _get(api, old)["parent"] == new_parent
    err = _error(api, "projects.update", {"project": old, "name": f"{root}/new/place/leaf/in"})
    assert err.subcode == 12
