from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError
from protocol.placeholders import (
    PLACEHOLDERS,
    check_key_template,
    find_unknown_placeholders,
    key_fits_template,
    render_key,
)

KNOWN = "known placeholders: {jobID}, {executionID}, {nodeID}, {date}, {time}"
IDS = {"job_id": "j-1", "execution_id": "e-2", "node_id": "QmNode"}


@pytest.mark.parametrize(
    ("template", "unknown"),
    [
        ("results/{jobID}.tar.gz", []),
        ("no-placeholders", []),
        ("", []),
        ("{jobId}", ["jobId"]),
        ("{a}-{jobID}-{b}-{a}", ["a", "b"]),
        ("{}", [""]),
        ("{JOBID}", ["JOBID"]),
    ],
)
def test_find_unknown_placeholders(template, unknown):
    assert find_unknown_placeholders(template) == unknown


@pytest.mark.parametrize("template", ["{jobID}", "r/{date}/{time}-{nodeID}-{executionID}", "x"])
def test_check_accepts_known(template):
    check_key_template(template)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "r/{jobId}",
            "invalid key template 'r/{jobId}': unknown placeholder {jobId} "
            f"(did you mean {{jobID}}?); {KNOWN}",
        ),
        (
            "{data}",
            "invalid key template '{data}': unknown placeholder {data} "
            f"(did you mean {{date}}?); {KNOWN}",
        ),
        (
            "{x}{y}",
            f"invalid key template '{{x}}{{y}}': unknown placeholders {{x}}, {{y}}; {KNOWN}",
        ),
        (
            "a{jobID",
            "invalid key template 'a{jobID': '{' at position 1 is not closed; placeholders are "
            f"written {{name}} and literal braces are not allowed; {KNOWN}",
        ),
        (
            "a}b",
            "invalid key template 'a}b': '}' at position 1 has no matching '{'; placeholders are "
            f"written {{name}} and literal braces are not allowed; {KNOWN}",
        ),
    ],
)
def test_check_rejects(template, message):
    with pytest.raises(LocalProtocolError) as info:
        check_key_template(template)
    assert str(info.value) == message


def test_render_all_placeholders():
    now = datetime(2024, 1, 29, 6, 1, 42, tzinfo=UTC)
    key = render_key("r/{jobID}/{executionID}/{nodeID}/{date}T{time}.tgz", now=now, **IDS)
    assert key == "r/j-1/e-2/QmNode/20240129T060142.tgz"


def test_render_converts_to_utc():
    now = datetime(2024, 1, 1, 1, 30, 0, tzinfo=timezone(timedelta(hours=2)))
    assert render_key("{date}-{time}", now=now, **IDS) == "20231231-233000"


def test_render_takes_naive_time_as_utc():
    assert render_key("{date}", now=datetime(2024, 2, 3, 23, 59), **IDS) == "20240203"


def test_render_pads_early_years():
    assert render_key("{date}", now=datetime(999, 1, 2, tzinfo=UTC), **IDS) == "09990102"


def test_render_refuses_unknown_placeholder():
    with pytest.raises(LocalProtocolError, match=r"unknown placeholder \{jobid\}"):
        render_key("{jobid}", now=datetime(2024, 1, 1, tzinfo=UTC), **IDS)


@given(
    st.lists(
        st.one_of(
            st.sampled_from(PLACEHOLDERS).map(lambda n: "{" + n + "}"),
            st.from_regex(r"[a-z/._-]{0,5}", fullmatch=True),
        ),
        max_size=6,
    )
)
def test_render_replaces_every_placeholder(parts):
    key = render_key("".join(parts), now=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC), **IDS)
    assert "{" not in key and "}" not in key


@given(st.sampled_from(["results/{jobID}", "r/{date}/{time}/{executionID}-{nodeID}.tgz",
                        "{jobID}/{date}", "fixed/key"]),
       st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_every_rendered_key_fits_its_template_and_no_other(template, now):
    ids = {"job_id": "j-abc", "execution_id": "e-def", "node_id": "12D3KooWnode"}
    key = render_key(template, now=now, **ids)
    assert key_fits_template(key, template, compressed=False, **ids)
    # The publisher adds ".tar.gz" to a compressed result's key unless it has an archive
    # suffix already.
    suffixed = key_fits_template(key + ".tar.gz", template, compressed=True, **ids)
    assert suffixed is not template.endswith(".tgz")
    assert not key_fits_template("other/" + key, template, compressed=False, **ids)
    if "{jobID}" in template:
        assert not key_fits_template(key, template, compressed=False,
                                     **{**ids, "job_id": "j-other"})


def test_a_key_naming_another_job_or_prefix_does_not_fit():
    ids = {"job_id": "j-1", "execution_id": "e-1", "node_id": "n"}
    assert key_fits_template("out/j-1-20261202.tar.gz", "out/{jobID}-{date}", compressed=True,
                             **ids)
    assert not key_fits_template("out/j-2-20261202", "out/{jobID}-{date}", compressed=False,
                                 **ids)
    assert not key_fits_template("secret/payroll.csv", "out/{jobID}", compressed=False, **ids)
    assert not key_fits_template("out/j-1-2026", "out/{jobID}-{date}", compressed=False, **ids)
    assert not key_fits_template("x", "out/{bad", compressed=False, **ids)
