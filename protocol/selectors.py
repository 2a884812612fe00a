"""Node selection: label constraints as Bacalhau stores them, and the selectors users type.

A ``Constraint`` is Bacalhau's ``{"Key", "Operator", "Values"}`` with Kubernetes
semantics: ``=``/``in`` need the label to be present with one of the values;
``!=``/``notin`` also hold when the label is absent; ``gt``/``lt`` compare integers
and fail when the label is absent or not an integer.

``parse_selector`` reads the Kubernetes selector syntax users pass with ``-s``
(``region=eu,zone in (a,b),!gpu``); ``parse_labels`` reads ``-l k=v,k2=v2``.
Keys and values follow Kubernetes label syntax.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import FieldError, LocalProtocolError, SpecError

__all__ = [
    "OPERATORS",
    "Constraint",
    "check_label_key",
    "check_label_value",
    "parse_labels",
    "parse_selector",
]

#: Bacalhau's operators, in the spelling ``to_dict`` writes.
OPERATORS: tuple[str, ...] = ("=", "!=", "exists", "!", "in", "notin", "gt", "lt")
# Other spellings accepted on input: k8s's "==" and its JSON operator names.
_OPERATOR_ALIASES = {"==": "=", "doesnotexist": "!"}
_NO_VALUES = ("exists", "!")
_ONE_VALUE = ("=", "!=", "gt", "lt")
_INTEGER_VALUE = ("gt", "lt")

_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_KEY_RE = re.compile(rf"(?:(?P<prefix>{_DNS_LABEL}(?:\.{_DNS_LABEL})*)/)?(?P<name>{_NAME})")
_VALUE_RE = re.compile(rf"(?:{_NAME})?")
_INT_RE = re.compile(r"[-+]?\d+")

_KEY_EXPECTED = (
    "expected a name of at most 63 letters, digits, '-', '_' or '.' that starts and ends "
    "with a letter or digit, optionally after a lowercase DNS prefix and '/', "
    "e.g. region or example.com/gpu-type"
)
_VALUE_EXPECTED = (
    "expected at most 63 letters, digits, '-', '_' or '.' that start and end with a "
    "letter or digit (or nothing), e.g. eu-west-1"
)
_SELECTOR_EXPECTED = (
    "expected KEY=VALUE, KEY!=VALUE, KEY in (V1,V2), KEY notin (V1,V2), KEY>N, KEY<N, KEY or !KEY"
)


def check_label_key(key: str) -> str | None:
    """Return why ``key`` is not a valid label key, or ``None`` if it is."""
    match = _KEY_RE.fullmatch(key)
    if match is None or (match["prefix"] and len(match["prefix"]) > 253):
        return f"invalid label key {key!r}: {_KEY_EXPECTED}"
    return None


def check_label_value(value: str) -> str | None:
    """Return why ``value`` is not a valid label value, or ``None`` if it is."""
    if _VALUE_RE.fullmatch(value) is None:
        return f"invalid label value {value!r}: {_VALUE_EXPECTED}"
    return None


@dataclass(frozen=True)
class Constraint:
    """One requirement on a node's labels, e.g. ``Constraint("region", "in", ("eu", "us"))``.

    Build untrusted ones with ``from_dict`` or ``parse_selector``, which validate.
    """

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a node with ``labels`` satisfies this constraint."""
        present = self.key in labels
        value = labels.get(self.key)
        op = self.operator
        if op == "exists":
            return present
        if op == "!":
            return not present
        if op in ("=", "in"):
            return present and value in self.values
        if op in ("!=", "notin"):
            return not present or value not in self.values
        if op in _INTEGER_VALUE:
            # As in Kubernetes: a label that is absent or not an integer never matches.
            want = self.values[0] if self.values else ""
            if value is None or not _INT_RE.fullmatch(value) or not _INT_RE.fullmatch(want):
                return False
            return int(value) > int(want) if op == "gt" else int(value) < int(want)
        return False

    def to_dict(self) -> dict[str, Any]:
        """Bacalhau's shape: ``{"Key": ..., "Operator": ..., "Values": [...]}``."""
        return {"Key": self.key, "Operator": self.operator, "Values": list(self.values)}

    @classmethod
    def from_dict(cls, data: Any, *, path: str = "") -> Constraint:
        """Validate Bacalhau's ``{"Key", "Operator", "Values"}``.

        Raises ``SpecError`` listing every problem, with paths under ``path``.
        ``Values`` may be omitted for ``exists`` and ``!``; operators are matched
        case-insensitively and ``==`` is read as ``=``.
        """

        def at(field: str) -> str:
            return f"{path}.{field}" if path else field

        if not isinstance(data, Mapping):
            raise SpecError([FieldError(path, f"expected a mapping, got {describe_value(data)}")])
        errors = [
            FieldError(at(str(name)), _unknown_field(name)) for name in data if name not in _FIELDS
        ]
        key = _string_field(data, "Key", at, errors)
        operator = _string_field(data, "Operator", at, errors)
        values = _string_list(data.get("Values"), at("Values"), errors)
        normalised = None
        if key is not None and (problem := check_label_key(key)):
            errors.append(FieldError(at("Key"), problem))
        if operator is not None:
            normalised = _normalise_operator(operator)
            if normalised is None:
                errors.append(FieldError(at("Operator"), _unknown_operator(operator)))
            elif values is not None:
                for problem in _values_problems(normalised, values):
                    errors.append(FieldError(at("Values"), problem))
        if errors:
            raise SpecError(errors)
        assert key is not None and normalised is not None and values is not None
        return cls(key, normalised, tuple(values))

    def __str__(self) -> str:
        """The selector syntax that ``parse_selector`` reads back."""
        op = self.operator
        if op == "exists":
            return self.key
        if op == "!":
            return f"!{self.key}"
        if op in ("in", "notin"):
            return f"{self.key} {op} ({','.join(self.values)})"
        if op in _INTEGER_VALUE:
            return f"{self.key}{'>' if op == 'gt' else '<'}{self.values[0]}"
        return f"{self.key}{op}{self.values[0]}"


_FIELDS = ("Key", "Operator", "Values")


def _string_field(
    data: Mapping[str, Any], name: str, at: Callable[[str], str], errors: list[FieldError]
) -> str | None:
    value = data.get(name)
    if isinstance(value, str):
        return value
    problem = (
        "required field is missing"
        if value is None
        else f"expected a string, got {describe_value(value)}"
    )
    errors.append(FieldError(at(name), problem))
    return None


def _string_list(value: Any, path: str, errors: list[FieldError]) -> list[str] | None:
    """``None`` (absent) is an empty list; returns ``None`` after recording a problem."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        errors.append(FieldError(path, f"expected a list, got {describe_value(value)}"))
        return None
    bad = [
        FieldError(f"{path}[{i}]", f"expected a string, got {describe_value(item)}")
        for i, item in enumerate(value)
        if not isinstance(item, str)
    ]
    errors.extend(bad)
    return None if bad else list(value)


def _normalise_operator(operator: str) -> str | None:
    lowered = operator.strip().lower()
    lowered = _OPERATOR_ALIASES.get(lowered, lowered)
    return lowered if lowered in OPERATORS else None


def _unknown_operator(operator: str) -> str:
    return f"unknown operator {operator!r}; expected one of: {', '.join(OPERATORS)}"


def _values_problems(operator: str, values: list[str]) -> list[str]:
    count = len(values)
    if operator in _NO_VALUES and count:
        return [f"operator {operator!r} takes no values, got {count}: {values!r}"]
    if operator in _ONE_VALUE and count != 1:
        return [f"operator {operator!r} takes exactly one value, got {count}: {values!r}"]
    if operator in ("in", "notin") and not count:
        return [f"operator {operator!r} takes at least one value, got none"]
    if operator in _INTEGER_VALUE:
        if not _INT_RE.fullmatch(values[0]):
            return [f"operator {operator!r} compares integers; {values[0]!r} is not an integer"]
        return []
    return [problem for v in values if (problem := check_label_value(v))]


def _unknown_field(name: object) -> str:
    close = difflib.get_close_matches(str(name), _FIELDS, n=1)
    if close:
        return f"unknown field (did you mean {close[0]!r}?)"
    return "unknown field; allowed fields: Key, Operator, Values"


def describe_value(value: object) -> str:
    """A value for an error message: its kind and a short repr (``integer 3``)."""
    if value is None:
        return "null"
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if isinstance(value, Mapping):
        kind = "mapping"
    elif isinstance(value, (list, tuple)):
        kind = "list"
    else:
        kind = kinds.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {text}"


# A clause: optional "!" then key, or key + operator + value(s).
_SET_CLAUSE_RE = re.compile(r"(?P<key>[^\s=!<>()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)")
_UNBRACKETED_SET_RE = re.compile(r"(?P<key>[^\s=!<>()]+)\s+(?P<op>in|notin)\s+[^(\s].*")
_BINARY_CLAUSE_RE = re.compile(r"(?P<key>[^=!<>()]+?)\s*(?P<op>==|=|!=|>|<)\s*(?P<value>.*)")
_UNARY_CLAUSE_RE = re.compile(r"(?P<neg>!?)\s*(?P<key>[^\s=!<>(),]+)")
_OPERATOR_WORDS = {"==": "=", "=": "=", "!=": "!=", ">": "gt", "<": "lt"}


def parse_selector(text: str) -> list[Constraint]:
    """Parse a Kubernetes-style selector into constraints, in the order written.

    Clauses are separated by commas outside parentheses: ``region=eu``,
    ``region==eu``, ``gpu!=true``, ``zone in (a,b)``, ``zone notin (a, b)``,
    ``mem>4`` / ``mem<4`` (integers), ``key`` (exists), ``!key`` (does not exist).
    An empty selector means no constraints. Raises ``LocalProtocolError`` quoting the
    bad clause.
    """
    if not text.strip():
        return []
    constraints: list[Constraint] = []
    for clause in _split_clauses(text):
        constraints.append(_parse_clause(clause, text))
    return constraints


def _split_clauses(text: str) -> list[str]:
    clauses: list[str] = []
    depth = 0
    start = 0
    for i, char in enumerate(text):
        if char == "(":
            if depth:
                raise LocalProtocolError(
                    f"invalid selector {text!r}: nested '(' at position {i}; "
                    "value lists cannot nest, e.g. zone in (a,b)"
                )
            depth = 1
        elif char == ")":
            if not depth:
                raise LocalProtocolError(
                    f"invalid selector {text!r}: ')' at position {i} has no matching '('"
                )
            depth = 0
        elif char == "," and not depth:
            clauses.append(text[start:i])
            start = i + 1
    if depth:
        raise LocalProtocolError(
            f"invalid selector {text!r}: clause {text[start:].strip()!r} is missing ')' "
            "after its value list, e.g. zone in (a,b)"
        )
    clauses.append(text[start:])
    for number, clause in enumerate(clauses, start=1):
        if not clause.strip():
            raise LocalProtocolError(
                f"invalid selector {text!r}: clause {number} is empty; "
                "separate clauses with single commas, e.g. region=eu,gpu=true"
            )
    return [clause.strip() for clause in clauses]


def _parse_clause(clause: str, text: str) -> Constraint:
    def fail(reason: str) -> LocalProtocolError:
        return LocalProtocolError(f"invalid selector {text!r}: clause {clause!r}: {reason}")

    if match := _SET_CLAUSE_RE.fullmatch(clause):
        key, operator = match["key"], match["op"]
        values = [v.strip() for v in match["values"].split(",")]
        if values == [""]:
            raise fail(f"{operator!r} needs at least one value, e.g. {key} {operator} (v1,v2)")
        if "" in values:
            raise fail("empty value in the list; remove the extra comma")
    elif match := _BINARY_CLAUSE_RE.fullmatch(clause):
        key, operator = match["key"], _OPERATOR_WORDS[match["op"]]
        values = [match["value"].strip()]
    elif match := _UNBRACKETED_SET_RE.fullmatch(clause):
        key, operator = match["key"], match["op"]
        raise fail(f"put the values in parentheses, e.g. {key} {operator} (v1,v2)")
    elif match := _UNARY_CLAUSE_RE.fullmatch(clause):
        key = match["key"]
        operator = "!" if match["neg"] else "exists"
        values = []
    else:
        raise fail(_SELECTOR_EXPECTED)
    if problem := check_label_key(key):
        raise fail(problem)
    for problem in _values_problems(operator, values):
        raise fail(problem)
    return Constraint(key, operator, tuple(values))


def parse_labels(text: str) -> dict[str, str]:
    """Parse ``--labels k=v,k2=v2`` into a dict; an empty string gives ``{}``.

    Raises ``LocalProtocolError`` for an item that is not ``KEY=VALUE``, an invalid
    key or value, or a key given twice.
    """
    labels: dict[str, str] = {}
    if not text.strip():
        return labels
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise LocalProtocolError(
                f"invalid labels {text!r}: item {item.strip()!r} is not KEY=VALUE, "
                "e.g. region=eu,gpu=true"
            )
        if problem := check_label_key(key) or check_label_value(value):
            raise LocalProtocolError(f"invalid labels {text!r}: {problem}")
        if key in labels:
            raise LocalProtocolError(
                f"invalid labels {text!r}: key {key!r} is given twice "
                f"({labels[key]!r} and {value!r})"
            )
        labels[key] = value
    return labels
