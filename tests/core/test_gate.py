"""The drift gate's arithmetic (xopt.gate): bounds, drops, max-drop, against known answers."""
import math

import pytest

from xopt.gate import Judge, drop, estimated_drop
from xopt.spec import DriftGate

MAE = DriftGate("mae", noise_multiple=3.0)
SDR = DriftGate("sdr_min_db", higher_is_better=True, noise_multiple=3.0, limit=30.0, db=True, nominal=9.0)
LDDT = DriftGate("lddt_ca", higher_is_better=True, noise_multiple=None, limit=0.99)


def test_noise_multiple_bounds_a_distance():
    j = Judge(MAE, noise=0.01)
    assert j.bound == pytest.approx(0.03) and j.ok(0.029) and not j.ok(0.031) and not j.ok(math.nan)


def test_db_terms_take_the_looser_of_noise_and_limit():
    # 3x the noise is 20*log10(3) = 9.54 dB below a 60 dB floor: 50.46 dB, tighter than the 30 dB limit
    j = Judge(SDR, noise=60.0)
    assert (j.kind, j.bound) == ("limit", 30.0) and j.ok(30.0) and not j.ok(29.9)
    j = Judge(SDR, noise=35.0)  # 35 - 9.54 = 25.46 dB: looser than the limit
    assert j.kind == "noise" and j.bound == pytest.approx(35 - 20 * math.log10(3)) and j.ok(26.0)


def test_max_drop_is_in_the_terms_own_units():
    assert drop(MAE, 0.02) == 0.02
    assert drop(LDDT, 0.97) == pytest.approx(0.03)
    # an error 9 dB below a 9 dB separation costs 10*log10(2) = 3.01 dB
    assert drop(SDR, 9.0) == pytest.approx(10 * math.log10(2)) == estimated_drop(9.0, 9.0)
    j = Judge(SDR, noise=60.0, max_drop=0.5)
    assert j.ok(25.0) and not j.ok(15.0)  # 25 dB parity costs 0.1 dB of a 9 dB model; 15 dB costs ~1 dB
    assert Judge(LDDT, noise=None, max_drop=0.02).ok(0.985) and not Judge(LDDT, None, max_drop=0.01).ok(0.985)


def test_closer_to_fp32_reads_the_direction():
    assert Judge(MAE, 0.01).better(0.01, 0.02) and Judge(SDR, 40.0).better(50.0, 40.0)


def test_a_gate_with_nothing_to_judge_by_is_refused():
    with pytest.raises(ValueError):
        Judge(DriftGate("mae", noise_multiple=None), noise=None)
