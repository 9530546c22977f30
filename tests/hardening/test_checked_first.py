"""Everything `xopt run` (and the other commands) can check is checked before any export: an
input that is missing, unreadable or of a kind the model cannot take, and a model or variant
name, or a --checkpoint that is not there. Each is one line naming the fix, exit code 1, and
nothing is created: no artifacts directory, no manifest, no output.

The commands run in a child process on a fresh folder (cwd), so that "before any export" is
checked by what exists afterwards: a check that came after the export would leave artifacts/.
"""
from __future__ import annotations

import numpy as np
import pytest

from ._support import assert_user_error, cli_process, png_bytes, snapshot, without_root_override

sf = pytest.importorskip("soundfile")


def _created(root, before: dict) -> set[str]:
    return set(snapshot(root)) - set(before)


def _refused(tmp_path, *args, needles=(), cwd=None):
    """`xopt ARGS` in a child, in a fresh working folder: one-line error, nothing new anywhere."""
    cwd = cwd or tmp_path
    before = snapshot(tmp_path)
    r = cli_process(*args, cwd=cwd)
    line = assert_user_error(r, *needles)
    assert _created(tmp_path, before) == set(), _created(tmp_path, before)  # no artifacts/, reports/, output
    return line


def _wav(path, channels: int, seconds: float = 0.5, rate: int = 44100, subtype: str = "PCM_16"):
    x = np.random.default_rng(channels).standard_normal((int(seconds * rate), channels)).astype(np.float32)
    sf.write(path, 0.1 * x, rate, subtype=subtype)
    return path


# ---------------------------------------------------------------- xopt run: the input, before an export

def _bytes(data: bytes):
    def make(path):
        path.write_bytes(data)
        return path
    return make


def _no_samples(path):
    sf.write(path, np.zeros((0, 2), np.float32), 44100)
    return path


AUDIO = {
    "empty file": (_bytes(b""), ("empty.wav is empty (0 bytes)",)),
    "not audio": (_bytes(b"just some text\n" * 10), ("cannot read", "as audio", "pass a WAV, FLAC, OGG or AIFF file")),
    "no samples": (_no_samples, ("is empty (0 samples)",)),
    "3 channels": (lambda p: _wav(p, 3), ("has 3 channels", "ffmpeg -i in.wav -ac 2 out.wav")),
    "4 channels": (lambda p: _wav(p, 4), ("has 4 channels", "convert it to stereo first")),
    "5 channels": (lambda p: _wav(p, 5), ("has 5 channels", "only mono, stereo, 5.1 and 7.1")),
    "7 channels": (lambda p: _wav(p, 7), ("has 7 channels",)),
    "10 channels": (lambda p: _wav(p, 10), ("has 10 channels",)),
}


@pytest.mark.parametrize("kind", list(AUDIO))
def test_demucs_input_is_refused_before_the_export(kind, tmp_path):
    """The reported case: `xopt run demucs empty.wav` exported the full htdemucs (~6 min) before
    it found that the file is not audio. Now the header is read first, in about a second."""
    make, needles = AUDIO[kind]
    src = make(tmp_path / "empty.wav")
    line = _refused(tmp_path, "run", "demucs", src.name, "-o", "stems", needles=(src.name, *needles))
    assert not (tmp_path / "artifacts").exists(), line


def test_a_6_channel_file_with_another_channel_mask_is_refused(tmp_path):
    """WAVE_FORMAT_EXTENSIBLE says where the channels are: 6 channels that are not 5.1 are refused."""
    x = np.zeros((4410, 6), np.float32)
    src = tmp_path / "hexa.wav"
    sf.write(src, x, 44100, format="WAVEX", subtype="PCM_16")
    data = bytearray(src.read_bytes())
    at = data.index(b"fmt ") + 8 + 20  # WAVEFORMATEXTENSIBLE: dwChannelMask after 20 bytes of fmt
    assert int.from_bytes(data[at:at + 4], "little") == 0x3F  # libsndfile wrote 5.1 (L R C LFE Ls Rs)
    data[at:at + 4] = (0x3F0).to_bytes(4, "little")  # six channels of another layout
    src.write_bytes(bytes(data))
    _refused(tmp_path, "run", "demucs", src.name, "-o", "stems", needles=("channel mask 0x3F0, not 5.1 or 7.1",))


@pytest.mark.parametrize("name, content, needle", [
    ("photo.png", b"", "is not a readable image"),
    ("photo.png", b"not a png at all" * 8, "is not a readable image"),
    ("notes.txt", b"just some text\n", "is neither an image nor a video this build can read"),
    ("clip.mp4", bytes(range(256)) * 8, "is neither an image nor a video this build can read"),
    ("bomb.png", png_bytes(20000, 20000, rows=b""), "is too large to decode"),  # 400 Mpx in the header
])
def test_modnet_input_is_refused_before_the_export(name, content, needle, tmp_path):
    (tmp_path / name).write_bytes(content)
    _refused(tmp_path, "run", "modnet", name, "-o", "matte.png", needles=(name, needle))


def test_a_video_with_no_frames_is_refused_before_the_export(tmp_path):
    pytest.importorskip("av")
    from ._support import empty_video

    empty_video(tmp_path / "empty.avi")
    _refused(tmp_path, "run", "modnet", "empty.avi", "-o", "matte.mp4", needles=("contains no video frames",))


@pytest.mark.parametrize("name, text, needle", [
    ("q.fasta", ">q\nMKV1TL\n", "not an amino-acid letter"),
    ("q.fasta", "", "holds no sequence"),
    ("q.a3m", ">q\nMKVL\n>hit\nMK\n", "match columns"),
])
def test_openfold_input_is_refused_before_the_export(name, text, needle, tmp_path):
    (tmp_path / name).write_text(text)
    _refused(tmp_path, "run", "openfold", name, "-o", "q.pdb", needles=(needle,))


def test_many_inputs_none_runnable_is_one_line_before_the_export(tmp_path):
    (tmp_path / "tracks").mkdir()
    _wav(tmp_path / "tracks" / "a.wav", 3)
    (tmp_path / "tracks" / "b.wav").write_bytes(b"RIFF nothing")
    line = _refused(tmp_path, "run", "demucs", "tracks", "-o", "stems",
                    needles=("none of the 2 inputs can be run by demucs", "a.wav has 3 channels", "and 1 more"))
    assert "ffmpeg" in line


def test_an_unreadable_input_is_refused_before_the_export(tmp_path):
    src = _wav(tmp_path / "locked.wav", 2)
    src.chmod(0o000)
    try:
        r = cli_process("run", "demucs", src.name, "-o", "stems", cwd=tmp_path, prefix=without_root_override())
        assert_user_error(r, "cannot read locked.wav (Permission denied)", "check the file and its permissions")
    finally:
        src.chmod(0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked.wav"]


# ---------------------------------------------------------------- names and --checkpoint, every command

@pytest.mark.parametrize("args, needle", [
    (["export", "modnett"], "unknown model 'modnett' (did you mean 'modnet'?)"),
    (["export", "modnet", "--variant", "int3"], "unknown variant for modnet 'int3'"),
    (["export", "modnet", "--checkpoint", "missing.ckpt"], "checkpoint missing.ckpt does not exist"),
    (["export", "demucs", "--checkpoint", "missing.th", "--chunk", "auto"], "checkpoint missing.th does not exist"),
    (["run", "modnett", "photo.png", "-o", "m.png"], "unknown model 'modnett'"),
    (["run", "modnet", "photo.png", "-o", "m.png", "--variant", "int3"], "unknown variant for modnet 'int3'"),
    (["profile", "modnett"], "unknown model 'modnett'"),
    (["profile", "modnet", "--variants", "fp32,int3"], "unknown variant for modnet 'int3'"),
    (["bench", "modnett"], "unknown model 'modnett'"),
    (["bench", "modnet", "--variants", "fp32,int3"], "unknown variant for modnet 'int3'"),
    (["eval", "modnett", "data"], "unknown model 'modnett'"),
    (["eval", "modnet", "data", "--variants", "int3"], "unknown variant for modnet 'int3'"),
    (["fit", "demucss"], "unknown model 'demucss'"),
    (["sweep", "bad.toml"], "unknown variant for modnet 'int3'"),
])
def test_names_and_checkpoint_are_checked_first(args, needle, tmp_path):
    """In seconds and before any export or report: nothing is created in the working folder."""
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "photo.png")
    (tmp_path / "data").mkdir()
    (tmp_path / "bad.toml").write_text('[[job]]\nmodel = "modnet"\nvariants = ["fp32", "int3"]\n')
    _refused(tmp_path, *args, needles=(needle,))


# ---------------------------------------------------------------- a plug-in model gets the same

PLUGIN = "from hardening.plugin_pipeline import ensure_registered; ensure_registered()"


def test_a_plugin_pipelines_check_runs_before_its_export(tmp_path):
    (tmp_path / "in.txt").write_text("not pixels\n")
    before = snapshot(tmp_path)
    r = cli_process("run", "toy-run", "in.txt", "-o", "out.npy", cwd=tmp_path, setup=PLUGIN)
    assert_user_error(r, "in.txt is not a pixels file", "start it with 'pixels:'")
    assert snapshot(tmp_path) == before  # no artifacts/toy-run


def test_a_plugin_pipelines_notes_and_exit_code(tmp_path):
    values = " ".join(f"{v:.3f}" for v in np.linspace(-1, 1, 3 * 64))
    (tmp_path / "whole.txt").write_text(f"pixels: {values}\n")
    (tmp_path / "short.txt").write_text("pixels: 0.1 0.2 0.3\n")
    r = cli_process("run", "toy-run", "whole.txt", "-o", "whole.npy", cwd=tmp_path, setup=PLUGIN)
    assert r.rc == 0, r.err
    assert "xopt: note: whole.txt: 192 values" in r.err
    assert np.load(tmp_path / "whole.npy").shape == (1, 1, 8, 8)
    r = cli_process("run", "toy-run", "short.txt", "-o", "short.npy", cwd=tmp_path, setup=PLUGIN)
    assert r.rc == 3, r.err
    assert "xopt: warning: short.txt: read 3 of 192 values: the file ends early" in r.err
    assert (tmp_path / "short.npy").is_file()  # what it could do is written
