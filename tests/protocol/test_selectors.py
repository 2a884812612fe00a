import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import FieldError, LocalProtocolError, SpecError
from protocol.selectors import Constraint, parse_labels, parse_selector

C = Constraint


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("  ", []),
        ("region=eu", [C("region", "=", ("eu",))]),
        ("region==eu", [C("region", "=", ("eu",))]),
        ("region = eu", [C("region", "=", ("eu",))]),
        ("gpu!=true", [C("gpu", "!=", ("true",))]),
        ("zone in (a,b)", [C("zone", "in", ("a", "b"))]),
        ("zone notin (a, b)", [C("zone", "notin", ("a", "b"))]),
        ("zone in(a)", [C("zone", "in", ("a",))]),
        ("key", [C("key", "exists")]),
        ("!key", [C("key", "!")]),
        ("mem>4", [C("mem", "gt", ("4",))]),
        ("mem<-4", [C("mem", "lt", ("-4",))]),
        ("example.com/gpu-type=a100", [C("example.com/gpu-type", "=", ("a100",))]),
        ("tier=", [C("tier", "=", ("",))]),
        (
            "region=eu,zone in (a,b),!gpu",
            [C("region", "=", ("eu",)), C("zone", "in", ("a", "b")), C("gpu", "!")],
        ),
        (
            " a=1 , b notin (x,y) , c ",
            [C("a", "=", ("1",)), C("b", "notin", ("x", "y")), C("c", "exists")],
        ),
    ],
)
def test_parse_selector(text, expected):
    assert parse_selector(text) == expected


LABELS = {"region": "eu", "zone": "a", "cores": "8", "arch": "arm64"}


@pytest.mark.parametrize(
    ("constraint", "matches"),
    [
        (C("region", "=", ("eu",)), True),
        (C("region", "=", ("us",)), False),
        (C("missing", "=", ("eu",)), False),
        (C("region", "!=", ("us",)), True),
        (C("region", "!=", ("eu",)), False),
        (C("missing", "!=", ("eu",)), True),  # k8s: absent satisfies !=
        (C("zone", "in", ("a", "b")), True),
        (C("zone", "in", ("b", "c")), False),
        (C("missing", "in", ("a",)), False),
        (C("zone", "notin", ("b", "c")), True),
        (C("zone", "notin", ("a",)), False),
        (C("missing", "notin", ("a",)), True),
        (C("arch", "exists"), True),
        (C("gpu", "exists"), False),
        (C("gpu", "!"), True),
        (C("arch", "!"), False),
        (C("cores", "gt", ("4",)), True),
        (C("cores", "gt", ("8",)), False),
        (C("cores", "lt", ("16",)), True),
        (C("cores", "lt", ("8",)), False),
        (C("missing", "gt", ("1",)), False),
        (C("arch", "gt", ("1",)), False),  # not an integer: no match
        (C("cores", "gt", ("-1",)), True),
    ],
)
def test_matches(constraint, matches):
    assert constraint.matches(LABELS) is matches


@pytest.mark.parametrize(
    "constraint",
    [
        C("region", "=", ("eu",)),
        C("zone", "notin", ("a", "b")),
        C("gpu", "exists"),
        C("gpu", "!"),
        C("cores", "gt", ("3",)),
    ],
)
def test_dict_round_trip(constraint):
    data = constraint.to_dict()
    assert set(data) == {"Key", "Operator", "Values"}
    assert Constraint.from_dict(data) == constraint


def test_to_dict_is_bacalhau_shaped():
    assert C("zone", "in", ("a", "b")).to_dict() == {
        "Key": "zone",
        "Operator": "in",
        "Values": ["a", "b"],
    }


@pytest.mark.parametrize(
    ("operator", "normal"), [("==", "="), ("In", "in"), ("NotIn", "notin"), ("EXISTS", "exists")]
)
def test_from_dict_normalises_operator_spelling(operator, normal):
    values = [] if normal == "exists" else ["x"]
    constraint = Constraint.from_dict({"Key": "k", "Operator": operator, "Values": values})
    assert constraint.operator == normal


def test_from_dict_values_may_be_omitted_for_exists():
    assert Constraint.from_dict({"Key": "gpu", "Operator": "exists"}) == C("gpu", "exists")


def test_from_dict_reports_every_problem():
    with pytest.raises(SpecError) as info:
        Constraint.from_dict(
            {"Key": "bad key", "Operator": "=", "Values": ["a", "b"], "Vals": 1}, path="C[0]"
        )
    assert info.value.errors == [
        FieldError("C[0].Vals", "unknown field (did you mean 'Values'?)"),
        FieldError(
            "C[0].Key",
            "invalid label key 'bad key': expected a name of at most 63 letters, digits, '-', "
            "'_' or '.' that starts and ends with a letter or digit, optionally after a "
            "lowercase DNS prefix and '/', e.g. region or example.com/gpu-type",
        ),
        FieldError("C[0].Values", "operator '=' takes exactly one value, got 2: ['a', 'b']"),
    ]


def test_str_reads_back():
    for text in ["region=eu", "zone in (a,b)", "zone notin (a)", "gpu", "!gpu", "n>3", "n<3"]:
        (constraint,) = parse_selector(text)
        assert str(constraint) == text
        assert parse_selector(str(constraint)) == [constraint]


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("", {}),
        ("region=eu", {"region": "eu"}),
        ("region=eu,gpu=true", {"region": "eu", "gpu": "true"}),
        (" a = 1 , b=2 ", {"a": "1", "b": "2"}),
        ("tier=", {"tier": ""}),
        ("example.com/team=ml", {"example.com/team": "ml"}),
    ],
)
def test_parse_labels(text, labels):
    assert parse_labels(text) == labels


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a", "invalid labels 'a': item 'a' is not KEY=VALUE, e.g. region=eu,gpu=true"),
        ("a=1,", "invalid labels 'a=1,': item '' is not KEY=VALUE, e.g. region=eu,gpu=true"),
        ("a=1,a=2", "invalid labels 'a=1,a=2': key 'a' is given twice ('1' and '2')"),
    ],
)
def test_parse_labels_errors(text, message):
    with pytest.raises(LocalProtocolError) as info:
        parse_labels(text)
    assert str(info.value) == message


label_names = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)


@given(
    st.lists(
        st.tuples(
            label_names,
            st.sampled_from(["=", "!=", "in", "notin", "!", "exists"]),
            st.lists(label_names, min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_selector_text_round_trips(parts):
    constraints = []
    for key, op, values in parts:
        if op in ("!", "exists"):
            values = []
        elif op in ("=", "!="):
            values = values[:1]
        constraints.append(C(key, op, tuple(values)))
    text = ",".join(str(c) for c in constraints)
    assert parse_selector(text) == constraints


@given(st.text(max_size=30))
def test_parse_selector_raises_only_local_protocol_error(text):
    try:
        constraints = parse_selector(text)
    except LocalProtocolError:
        return
    for constraint in constraints:
        assert Constraint.from_dict(constraint.to_dict()) == constraint
