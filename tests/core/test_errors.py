from xopt.errors import MissingExtraError, ParityError, UnknownChoiceError, UserError


def test_user_error_is_one_line_with_fix():
    e = UserError("image foo.png is not readable\n(truncated)", "pass a PNG or JPEG")
    assert "\n" not in str(e) and str(e).endswith("pass a PNG or JPEG.")


def test_missing_extra_names_the_extra():
    assert 'pip install "xopt[trt-rtx]"' in str(MissingExtraError("tensorrt_rtx", "trt-rtx"))


def test_unknown_choice_lists_choices():
    assert "a, b" in str(UnknownChoiceError("model", "zz", ["b", "a"]))


def test_parity_error_lists_each_output():
    e = ParityError("m fp16", {"x": {"max_abs": 0.5, "max_rel": 2.0, "mean_abs": 0.1, "finite": True},
                               "y": {"max_abs": float("inf"), "max_rel": float("inf"), "mean_abs": float("inf"),
                                     "finite": False}}, {"max_abs": 0.01})
    s = str(e)
    assert "x: max_abs=0.5" in s and "y:" in s and "NaN/Inf" in s and "max_abs<=0.01" in s
