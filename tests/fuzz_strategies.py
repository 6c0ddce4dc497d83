"""Strategies and checks shared by the fuzz tests (test_fuzz_artifact.py, test_fuzz_checkpoint.py)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st

from gemma_edge.artifact.errors import GemmaEdgeError

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])

# JSON values of every kind, the odd ones often: huge and negative numbers, NaN, deep-ish nesting.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**12, 10**40]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "../x", "/etc/passwd", "sliding_attention", "onnx", "float32", "decoder", "\n"]),
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8
)
ESCAPING_PATHS = st.sampled_from(
    [
        "../outside.bin",
        "/etc/hostname",
        "a/../../outside.bin",
        "..",
        "C:\\outside.bin",
        "\\\\server\\share\\x",
        "x\x00y",
        "",
        "./../outside.bin",
    ]
)


def assert_refusal(error: GemmaEdgeError) -> None:
    message = str(error)
    assert len(message.splitlines()) == 1, repr(message)  # splitlines: every kind of line break


def refused(error: GemmaEdgeError) -> None:
    """assert_refusal inside a hypothesis example, recording what refused it (shown by
    --hypothesis-show-statistics, to see the examples reach past the first check)."""
    assert_refusal(error)
    event("refused: " + " ".join(word for word in str(error).split()[:8] if "/" not in word))


def json_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into a parsed JSON document (objects and lists), the root excluded."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found.append((*prefix, key))
        found.extend(json_paths(item, (*prefix, key)))
    return found


def mutate(document: Any, data: st.DataObject) -> Any:
    """`document` with one change at a drawn place: a value replaced, a key deleted or added."""
    document = json.loads(json.dumps(document))
    paths = json_paths(document)
    path = data.draw(st.sampled_from(paths))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = data.draw(JSON_VALUES)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(JSON_VALUES)
    else:
        parent.append(data.draw(JSON_VALUES))
    return document
