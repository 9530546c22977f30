import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xopt.errors import UnknownChoiceError, UserError
from xopt.profiles import DEFAULT_PROFILE, available, get_profile, parse


def test_every_shipped_profile_validates():
    names = available()
    assert DEFAULT_PROFILE in names and "cpu" in names
    for name in names:
        p = get_profile(name)
        assert p.budget_mb < p.memory_mb and p.precisions


def test_default_is_the_3060_laptop():
    p = get_profile()
    assert p.name == "rtx3060-laptop-12gb" and p.memory_mb == 12288 and p.compute_capability == "8.6"
    assert p.model_targets("modnet")["fps"] == 30.0


def test_unknown_profile_lists_choices():
    with pytest.raises(UnknownChoiceError, match="rtx3060-laptop-12gb"):
        get_profile("gtx480")


@pytest.mark.parametrize("bad, why", [
    ({"name": "x", "kind": "gpu"}, r"\[device\]"),
    ({"name": "x", "kind": "tpu", "device": {"memory_mb": 1}}, "kind"),
    ({"name": "x", "kind": "gpu", "device": {"memory_mb": -5}}, "memory_mb"),
    ({"name": "x", "kind": "gpu", "device": {"memory_mb": 5, "headroom": 1.5}}, "headroom"),
    ({"name": "x", "kind": "gpu", "device": {"memory_mb": 5, "precisions": ["fp8"]}}, "precisions"),
])
def test_invalid_profiles_are_user_errors(bad, why):
    with pytest.raises(UserError, match=why):
        parse(bad)


def test_profile_file_with_bad_toml(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("name = [unclosed")
    with pytest.raises(UserError, match="TOML"):
        get_profile(str(f))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "kind", "device", "targets", "description"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
                                 st.dictionaries(st.sampled_from(["memory_mb", "headroom", "precisions"]),
                                                 st.one_of(st.integers(-10, 10), st.floats(allow_nan=True),
                                                           st.lists(st.sampled_from(["fp16", "x"]), max_size=2))))))
def test_profile_parser_never_crashes(data):
    try:
        p = parse(data)
    except UserError:
        return
    assert p.memory_mb > 0 and 0 <= p.headroom < 1
