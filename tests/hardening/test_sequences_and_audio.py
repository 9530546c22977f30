"""OpenFold's FASTA/A3M input and Demucs' audio input as users have them, through the public
readers (`xopt.models.openfold.pipeline.read_input`, the Demucs pipeline's audio reader) and,
for audio, `xopt run demucs` on a tiny export: accepted and normalised, or one line naming
the problem and the fix, with nothing written."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xopt.errors import UserError

from ._support import assert_user_error, cli, debris, snapshot

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_DIR = Path(tempfile.mkdtemp(prefix="xopt-hypothesis-seq-"))
atexit.register(shutil.rmtree, _DIR, True)  # hypothesis examples share one scratch folder
STANDARD = set("ACDEFGHIKLMNPQRSTVWY")


def _read(name: str, text: str):
    from xopt.models.openfold.pipeline import read_input

    path = _DIR / name
    path.write_text(text)
    return read_input(path)


# ---------------------------------------------------------------- FASTA and A3M

@pytest.mark.parametrize("text, sequence, note", [
    (">q lowercase\nmkvl\naeg\n", "MKVLAEG", None),
    (">q\nMKX VLX*\n", "MKXVLX", None),  # X is unknown; whitespace and a stop are dropped
    (">q\nMKUVL\n", "MKCVL", "1 x U read as C"),  # selenocysteine folded as cysteine, and said so
    ("MKVLAEG\n", "MKVLAEG", None),  # a bare sequence without a header
])
def test_fasta_that_is_accepted(text, sequence, note):
    query, aln = _read("ok.fasta", text)
    assert query.sequence == sequence and aln is None
    assert (note in query.notes) if note else not query.notes


@pytest.mark.parametrize("text, needles", [
    (">q\nMKV-LAE\n", ("has a gap '-' at position 4", "give the query ungapped")),
    (">a\nMKV\n>b\nLAE\n", ("holds 2 records (a, b)", "keep one record per file")),
    (">q\n\n", ("has an empty sequence", "put the residues on the lines after the header")),
    ("", ("holds no sequence", "one '>name' record")),
    (">q\nMKV1LAE\n", ("has '1' at position 4, not an amino-acid letter", "use the one-letter codes")),
    (">q\nMKV#\n", ("has '#' at position 4",)),
    (">q\nXXXX\n", ("only unknown residues",)),
    ("junk before\n>q\nMKV\n", ("text before the first '>' header (line 1)",)),
])
def test_fasta_that_is_refused(text, needles):
    with pytest.raises(UserError) as e:
        _read("bad.fasta", text)
    assert "\n" not in str(e.value)
    for needle in needles:
        assert needle in str(e.value)


def test_a3m_rows_of_different_length_are_refused():
    good = ">query\nMKVLAEG\n>hit1\nMK-LAEG\n>hit2\nMKvvILAEG\n"  # lowercase: insertions, not columns
    query, aln = _read("ok.a3m", good)
    assert query.sequence == "MKVLAEG" and [len(r) for r in aln.rows] == [7, 7, 7]
    assert aln.deletions[2][2] == 2
    with pytest.raises(UserError, match="A3M row 'hit1' has 6 match columns, the query has 7; re-export the "
                                        "alignment in A3M format"):
        _read("bad.a3m", ">query\nMKVLAEG\n>hit1\nMKLAEG\n")
    with pytest.raises(UserError, match="not a residue or gap"):
        _read("bad.a3m", ">query\nMKVLAEG\n>hit1\nMK#LAEG\n")
    with pytest.raises(UserError, match="first A3M row .* has gaps"):
        _read("bad.a3m", ">query\nMK-LAEG\n")


def test_unreadable_sequence_files():
    from xopt.models.openfold.pipeline import read_input

    path = _DIR / "binary.fasta"
    path.write_bytes(b">q\nMK\xff\xfeV\n")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        read_input(path)
    with pytest.raises(UserError, match="is a directory"):
        read_input(_DIR)
    with pytest.raises(UserError, match="does not exist"):
        read_input(_DIR / "missing.fasta")


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("ACDEFGHIKLMNPQRSTVWYXUBZJO acdefgxu-.*>;\n\r\t1#")), max_size=80))
def test_fasta_reader_property(text):
    try:
        query, _ = _read("p.fasta", text)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    assert query.sequence and set(query.sequence) <= STANDARD | {"X"} and set(query.sequence) != {"X"}


@SETTINGS
@given(st.lists(st.text(alphabet=st.sampled_from(list("ACDKLMVWXacdk-.U#")), max_size=12), min_size=1, max_size=4))
def test_a3m_reader_property(rows):
    text = "".join(f">r{i}\n{row}\n" for i, row in enumerate(rows))
    try:
        query, aln = _read("p.a3m", text)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    width = len(aln.rows[0])
    assert all(len(r) == width for r in aln.rows) and all(len(d) == width for d in aln.deletions)
    assert query.sequence == aln.rows[0] and "-" not in query.sequence


# ---------------------------------------------------------------- audio

sf = pytest.importorskip("soundfile")


def _mix(seconds: float, rate: int = 44100) -> np.ndarray:
    from xopt.models.demucs.synth import generate

    return generate(seconds, 3, rate)[0]  # [2, L] float32


@SETTINGS
@given(st.binary(max_size=400), st.sampled_from([".wav", ".flac", ".ogg", ".bin"]))
def test_audio_reader_on_arbitrary_bytes(data, suffix):
    from xopt.models.demucs.pipeline import audio

    path = _DIR / ("noise" + suffix)
    path.write_bytes(data)
    try:
        wav = audio.read(path, 44100, 2)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    assert wav.ndim == 2 and wav.shape[0] == 2 and wav.dtype == np.float32 and np.isfinite(wav).all()


def _write_audio(path: Path, kind: str) -> int:
    """Write `kind` of audio to `path`; return the length the stems must have at 44.1 kHz."""
    mix = _mix(0.6)
    if kind == "mono":
        sf.write(path, mix[0], 44100)
    elif kind == "48 kHz":
        sf.write(path, _mix(0.6, 48000).T, 48000)
        return int(round(0.6 * 48000 * 44100 / 48000))
    elif kind == "8-bit":
        sf.write(path, mix.T * 0.5, 44100, subtype="PCM_U8")
    elif kind == "0.1 s":
        sf.write(path, mix[:, :4410].T, 44100)
        return 4410
    elif kind == "silent":
        sf.write(path, np.zeros((26460, 2), np.float32), 44100)
    return mix.shape[1]


@pytest.mark.slow  # the tiny Demucs export takes ~30-90 s on two busy cores
@pytest.mark.parametrize("kind", ["mono", "48 kHz", "8-bit", "0.1 s", "silent"])
def test_audio_that_is_separated(kind, demucs_export, tmp_path):
    src = tmp_path / "in" / ("track.flac" if kind == "48 kHz" else "track.wav")  # FLAC has no 8-bit unsigned
    src.parent.mkdir()
    length = _write_audio(src, kind)
    r = cli("run", "demucs", src, "-o", tmp_path / "stems", "--artifacts", demucs_export)
    assert r.rc == 0, r.err
    stems = sorted((tmp_path / "stems" / "track").glob("*.wav"))
    assert [p.stem for p in stems] == ["bass", "drums", "other", "vocals"]
    for p in stems:
        data, rate = sf.read(p, always_2d=True)
        assert rate == 44100 and data.shape == (length, 2) and np.isfinite(data).all()
        if kind == "silent":
            assert np.abs(data).max() < 1e-3
    assert not debris(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("content, needles", [
    ("nan", ("contains", "NaN/Inf samples", "fix or re-encode the audio")),
    ("empty", ("is empty (0 samples)",)),
    (b"RIFF\x00\x00 not a wave file", ("cannot read", "as audio", "pass a WAV, FLAC, OGG or AIFF file")),
])
def test_audio_that_is_refused(content, needles, demucs_export, tmp_path):
    src = tmp_path / "in" / "track.wav"
    src.parent.mkdir()
    if content == "nan":
        mix = _mix(0.3)
        mix[1, 100] = np.nan
        sf.write(src, mix.T, 44100, subtype="FLOAT")
    elif content == "empty":
        sf.write(src, np.zeros((0, 2), np.float32), 44100, subtype="FLOAT")
    else:
        src.write_bytes(content)
    before = snapshot(src.parent)
    r = cli("run", "demucs", src, "-o", tmp_path / "stems", "--artifacts", demucs_export)
    assert_user_error(r, *needles)
    assert not (tmp_path / "stems").exists() and snapshot(src.parent) == before
