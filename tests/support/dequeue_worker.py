"""A separate process that calls queues.get_next_task N times and prints the task ids it got."""

from __future__ import annotations

import json
import sys

from bosun.client import Session


def main() -> None:
    url, queue_id, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
    got: list[str] = []
    with Session(url, "k", "s") as api:
        for _ in range(calls):
            data = api.call("queues.get_next_task", {"queue": queue_id})
            if data.get("entry"):
                got.append(data["entry"]["task"])
    print(json.dumps(got))


if __name__ == "__main__":
    main()
