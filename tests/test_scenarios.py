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
