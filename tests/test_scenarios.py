import re

import pytest

from flux_perf.model.scenarios import BUILTIN, Scenario, ScenarioError, parse_scenario, parse_scenarios


def test_builtin_scenarios_are_the_guides_table():
    assert [s.id for s in BUILTIN] == ["512x512@6", "768x768@6", "1024x1024@8", "512x512@4"]


@pytest.mark.parametrize("text, expected", [
    ("512x512@6", Scenario(512, 512, 6)),
    ("1024@8", Scenario(1024, 1024, 8)),
    ("512x768@4-g3.5-s7", Scenario(512, 768, 4, 3.5, 7)),
])
def test_parse(text, expected):
    assert parse_scenario(text) == expected
    assert parse_scenario(expected.id) == expected


@pytest.mark.parametrize("kwargs, named", [
    ({"height": 500, "width": 512, "steps": 6}, "height=500"),
    ({"height": 512, "width": 0, "steps": 6}, "width=0"),
    ({"height": -16, "width": 512, "steps": 6}, "height=-16"),
    ({"height": 8192, "width": 512, "steps": 6}, "height=8192"),
    ({"height": 512, "width": 512, "steps": 0}, "steps=0"),
    ({"height": 512.0, "width": 512, "steps": 6}, "height"),
    ({"height": 512, "width": 512, "steps": 6, "seed": -1}, "seed=-1"),
])
def test_bad_values_name_the_value(kwargs, named):
    with pytest.raises(ScenarioError, match=named.replace(".", r"\.")):
        Scenario(**kwargs)


def test_not_multiple_of_16_suggests_nearest():
    with pytest.raises(ScenarioError, match="not a multiple of 16.*nearest valid: 512"):
        Scenario(510, 512, 6)


def test_unreadable_text():
    with pytest.raises(ScenarioError, match="cannot read scenario 'big'"):
        parse_scenario("big")


def test_no_list_gives_builtins_and_an_empty_one_is_an_error():
    assert parse_scenarios(None) == BUILTIN
    assert parse_scenarios("64x64@2,128@1") == (Scenario(64, 64, 2), Scenario(128, 128, 1))
    for text in ("", ",", " , "):
        with pytest.raises(ScenarioError, match="no scenario in"):
            parse_scenarios(text)


def test_a_scenario_named_twice_is_refused():
    # 64@1 and 64x64@1 are one scenario: timed once, it would count as two cases.
    with pytest.raises(ScenarioError, match="scenario 64x64@1 is named twice in '64@1,64x64@1'"):
        parse_scenarios("64@1,64x64@1")
    assert len(parse_scenarios("64@1,64@2")) == 2


@pytest.mark.parametrize("text, message", [
    # Above the maximum: the suggestion is the maximum, never a multiple of 16 beyond it (was 4992).
    ("5000x5000@6", "height=5000 exceeds the maximum of 4096 pixels (nearest valid: 4096; "
                    "multiples of 16 from 16 to 4096)"),
    ("4100x512@6", "height=4100 exceeds the maximum of 4096 pixels (nearest valid: 4096;"),
    ("4095x512@6", "height=4095 is not a multiple of 16 (nearest valid: 4096)"),
    ("512x8@6", "width=8 is not a multiple of 16 (nearest valid: 16)"),
    ("1000x512@8", "height=1000 is not a multiple of 16 (nearest valid: 992)"),  # a tie goes down
    ("0x512@6", "height=0 must be positive (multiples of 16 from 16 to 4096)"),
    # 23 digits: integer arithmetic, in range (a float gave "nearest valid: 12345678901234567741440").
    ("12345678901234567890123x512@6",
     "height=12345678901234567890123 exceeds the maximum of 4096 pixels (nearest valid: 4096;"),
])
def test_size_suggestions_stay_in_range_and_exact(text, message):
    with pytest.raises(ScenarioError) as error:
        parse_scenario(text)
    assert message in str(error.value)


def test_nearest_valid_side_is_integer_arithmetic_within_the_range():
    from flux_perf.model.scenarios import MAX_SIDE, nearest_valid_side

    for value in [1, 7, 8, 9, 23, 24, 25, 4087, 4088, 4095, 4097, 4104, 5000, 10**22 + 7, 2**80 + 9]:
        nearest = nearest_valid_side(value)
        assert 16 <= nearest <= MAX_SIDE and nearest % 16 == 0, (value, nearest)
        Scenario(nearest, nearest, 1)  # the suggestion itself is accepted
    assert nearest_valid_side(8 * 10**21 + 24) == MAX_SIDE
    assert [nearest_valid_side(v) for v in (24, 25, 1000, 1001)] == [16, 32, 992, 1008]


def test_thousands_of_digits_are_named_by_their_length():
    from flux_perf.model.scenarios import parse_resolution

    for call in (lambda: parse_scenario("9" * 5000 + "@6"), lambda: parse_resolution("512x" + "9" * 5000)):
        with pytest.raises(ScenarioError, match="is a number of 5000 digits: sizes are multiples of 16 from 16 to 4096"):
            call()


@pytest.mark.parametrize("text, message", [
    ("512@6-g1.2.3", "cannot read scenario '512@6-g1.2.3'"),
    ("512@6-g.", "cannot read scenario '512@6-g.'"),
    ("512@6-s" + "9" * 30, "must be an integer from 0 to 2**63 - 1"),
])
def test_a_bad_guidance_or_seed_is_a_scenario_error_naming_it(text, message):
    """A bare ValueError from float() or torch's seed overflow named no file or key (budgets.toml)."""
    with pytest.raises(ScenarioError, match=re.escape(message)):
        parse_scenario(text)
    assert parse_scenario("512@6-g3.5-s7").id == "512x512@6-g3.5-s7"
