"""Out of memory during profiling is a result ("does not fit the budget", with what does fit),
not a crash. The limit is real: the address space of a child process is capped."""
import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, {tests!r})
    from toy_model import ensure_registered
    from xopt.export.pipeline import export_model
    from xopt.analysis.profiler import profile_model
    ensure_registered()
    export_model("toy", ["fp32"], out_dir={art!r}, config="wide")
    import onnxruntime  # mapped before the cap so only the activations count
    size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + 1500 * 2**20, resource.RLIM_INFINITY))
    report = profile_model("toy", ["fp32"], artifacts={art!r}, frames=2, profile_name={profile!r}, e2e=False)
    print(json.dumps(report["results"][0], default=str))
""")


def test_out_of_memory_reports_what_fits(tmp_path):
    import pathlib

    profile = tmp_path / "huge.toml"
    profile.write_text('name = "huge"\nkind = "cpu"\n[device]\nmemory_mb = 1024\n'
                       '[targets.toy]\nheight = 4096\nwidth = 4096\n')
    tests = str(pathlib.Path(__file__).resolve().parents[1])
    code = SCRIPT.format(tests=tests, art=str(tmp_path / "art"), profile=str(profile))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["error"].startswith("does not fit at height=4096, width=4096")
    assert "fits at height=" in result["error"]
    assert result["fits_at"]["height"] < 4096 and result["budget"]["passed"] is False
