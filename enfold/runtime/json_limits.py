"""Limits on a JSON request body, checked on its bytes before it is parsed.

``json.loads`` builds every value of a body at once: 10 MiB of ``[],[],...`` is 3.5 million
lists (about 150 MiB), and 1,000 nested brackets exhaust Python's recursion limit. The
Open Inference Protocol's JSON tensors are the one place the server parses a large body, so
each body is first scanned (vectorised, in fixed-size chunks, building nothing) for:

* ``max_depth``: nesting of arrays and objects;
* ``max_elements``: values inside arrays and objects (arrays and objects count as values too);
* ``max_containers``: arrays and objects.

Brackets and commas inside strings are not counted: escapes are neutralised first, so a quote
that ends a string is found exactly. Over a limit is a :class:`LimitError` naming the limit and
the ``enfold serve`` option that raises it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from enfold.errors import LimitError

# Bytes scanned per step: bounds the scan's own memory (a few int32 arrays of this length).
CHUNK = 1 << 20
OPTION = {"max_depth": "--max-json-depth", "max_elements": "--max-json-elements",
          "max_containers": "--max-json-elements"}
QUOTE, COMMA = ord('"'), ord(",")
OPEN = (ord("["), ord("{"))
CLOSE = (ord("]"), ord("}"))


@dataclass(frozen=True)
class JsonCounts:
    """What the scan found: deepest nesting, values inside containers, arrays and objects."""

    depth: int
    elements: int
    containers: int


@dataclass(frozen=True)
class JsonLimits:
    """The limits of one body; see the module docstring. :meth:`check` applies them."""

    max_depth: int = 32
    max_elements: int = 1_000_000
    max_containers: int = 100_000

    def __post_init__(self) -> None:
        for key in ("max_depth", "max_elements", "max_containers"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")

    def check(self, body: bytes) -> JsonCounts:
        """Scan ``body``; raise :class:`LimitError` at the first limit it passes (the scan stops
        there), else return the counts."""
        return scan(body, self)


def scan(body: bytes, limits: JsonLimits | None = None) -> JsonCounts:
    """Depth, elements and containers of the JSON text ``body``, without parsing it.

    Malformed text is counted as far as it goes (the parser that follows reports it).
    """
    # "\\" then \" as pairs, left to right, is how JSON reads escapes: afterwards every quote
    # left opens or closes a string. (bytes.replace returns the body itself when there is none.)
    text = body.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    depth = deepest = containers = commas = 0
    in_string = False
    for start in range(0, len(text), CHUNK):
        a = np.frombuffer(text, np.uint8, min(CHUNK, len(text) - start), start)
        quotes = np.cumsum(a == QUOTE, dtype=np.int32)
        outside = (quotes & 1) == (1 if in_string else 0)  # even count of quotes so far
        opens = ((a == OPEN[0]) | (a == OPEN[1])) & outside
        closes = ((a == CLOSE[0]) | (a == CLOSE[1])) & outside
        level = np.cumsum(opens.view(np.int8) - closes.view(np.int8), dtype=np.int32) + depth
        deepest = max(deepest, int(level.max()))
        depth = int(level[-1])
        containers += int(np.count_nonzero(opens))
        commas += int(np.count_nonzero((a == COMMA) & outside))
        in_string = in_string != bool(quotes[-1] & 1)
        # every value is first in its container or follows a comma: commas + containers bound
        # the values, the root excepted
        counts = JsonCounts(deepest, commas + containers, containers)
        if limits is not None:
            _check(counts, limits)
    return JsonCounts(deepest, commas + containers, containers)


def _check(counts: JsonCounts, limits: JsonLimits) -> None:
    if counts.depth > limits.max_depth:
        raise LimitError(f"the JSON body nests arrays and objects more than {limits.max_depth} "
                         f"deep (max_json_depth, {OPTION['max_depth']}); send tensors as flat "
                         "or shape-nested lists", "max_depth")
    if counts.elements > limits.max_elements:
        raise LimitError(f"the JSON body holds more than {limits.max_elements:,} values (the "
                         f"limit, {OPTION['max_elements']}, fits this model's largest batch); "
                         "send fewer rows, or use the binary tensor extension",
                         "max_elements")
    if counts.containers > limits.max_containers:
        raise LimitError(f"the JSON body holds more than {limits.max_containers:,} arrays and "
                         f"objects (the limit follows {OPTION['max_containers']} and the model's "
                         "row length); send the tensor as one flat list", "max_containers")
