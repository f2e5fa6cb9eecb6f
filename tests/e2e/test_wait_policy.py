"""The OpenMP wait policy (src/wait_policy.c): neuralforge re-executes itself once at start-up with its
GOMP_SPINCOUNT unless the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT, never twice (train's --restart-every
re-execs itself too), and `benchmark --competing-load` reports the slowdown beside busy processes. libgomp's
OMP_DISPLAY_ENV prints its settings on stderr each time it loads: one block per exec of the program, so the
blocks count the re-execs and show what libgomp itself read. No timing is asserted."""
import os
import re

from harness import assert_error, run, run_all, shared, test, tmpdir, write_tokens

CHOSEN = "1000"  # NF_GOMP_SPINCOUNT in src/wait_policy.h
OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NF_WAIT_POLICY_SET")


def env(**set_vars):
    e = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    e.update(OMP_DISPLAY_ENV="verbose", **set_vars)
    return e


def libgomp_loads(r):
    """The GOMP_SPINCOUNT libgomp read at each load of the program, in order."""
    text = r.stderr.decode("utf-8", "replace")
    blocks = text.count("OPENMP DISPLAY ENVIRONMENT BEGIN")
    spins = re.findall(r"GOMP_SPINCOUNT = '(\d+)'", text)
    assert len(spins) == blocks, text
    return spins


def bench(e, extra=()):
    return run(["benchmark", "--generate", "--model", shared("stories260K.bin"), "--prompt-tokens", 4, "--tokens", 4,
                *extra], env=e)


@test
def the_chosen_spin_count_reaches_libgomp_after_one_re_exec():
    r = bench(env())
    assert r.rc == 0, r.stdout
    assert libgomp_loads(r) == ["300000", CHOSEN]  # libgomp's default, then ours: exactly one re-exec
    assert r.one("benchmark")["wait_policy"] == {"source": "neuralforge", "omp_wait_policy": None,
                                                 "gomp_spincount": CHOSEN}


@test
def a_users_own_settings_are_kept_without_a_re_exec():
    r = bench(env(GOMP_SPINCOUNT="1234"))
    assert r.rc == 0 and libgomp_loads(r) == ["1234"]
    assert r.one("benchmark")["wait_policy"] == {"source": "user", "omp_wait_policy": None, "gomp_spincount": "1234"}
    r = bench(env(OMP_WAIT_POLICY="active"))
    assert r.rc == 0 and len(libgomp_loads(r)) == 1  # active: libgomp spins without a bound
    assert r.one("benchmark")["wait_policy"] == {"source": "user", "omp_wait_policy": "active",
                                                 "gomp_spincount": None}


@test
def a_child_of_a_re_executed_process_runs_as_it_is():
    # what train's --restart-every, mpirun's ranks and the dashboard's runs inherit
    r = bench(env(NF_WAIT_POLICY_SET="neuralforge", GOMP_SPINCOUNT=CHOSEN))
    assert r.rc == 0 and libgomp_loads(r) == [CHOSEN]
    assert r.one("benchmark")["wait_policy"]["source"] == "neuralforge"


@test
def errors_before_any_work_still_re_exec_once():
    r = run(["benchmark", "--competing-load", 65], env=env())
    assert_error(r, "usage", "--competing-load")
    assert libgomp_loads(r) == ["300000", CHOSEN]


@test
def commands_without_parallel_work_do_not_re_exec():
    r = run(["info", "--model", shared("stories260K.bin")], env=env())
    assert r.rc == 0 and r.one("info")["key"] == "model", r.stdout
    assert libgomp_loads(r) == ["300000"]  # info reads a header: a re-exec would only add its start-up time


@test
def restart_every_does_not_re_exec_twice():
    d = tmpdir()
    data = os.path.join(d, "t.bin")
    write_tokens(data, [(i * 7) % 64 for i in range(4096)], vocab=64)
    r = run(["train", "--init", "--dim", 16, "--n-layers", 1, "--n-heads", 2, "--vocab-size", 64, "--seq-len", 16,
             "--data", data, "--steps", 6, "--batch", 2, "--seq", 16, "--val-every", 0, "--restart-every", 2,
             "--ckpt", os.path.join(d, "c.ckpt")], env=env(), timeout=300)
    assert r.rc == 0, r.stdout
    assert [m["step"] for m in r.of_type("restart")] == [2, 4]
    # the first load, the wait policy's re-exec, then one load per restart, all with the chosen count
    assert libgomp_loads(r) == ["300000", CHOSEN, CHOSEN, CHOSEN]


def spinners_of(marker):
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


@test
def competing_load_reports_the_ratio_against_the_run_alone():
    model = os.path.join(tmpdir(), "m.bin")  # a unique path: the busy children share the parent's command line
    with open(shared("stories260K.bin"), "rb") as src, open(model, "wb") as dst:
        dst.write(src.read())
    r = run(["benchmark", "--generate", "--model", model, "--prompt-tokens", 4, "--tokens", 8,
             "--competing-load", 2], env=env())
    assert r.rc == 0, r.stdout
    alone, loaded = r.of_type("benchmark")
    assert alone["competing_load"] == 0 and "load_ratio" not in alone
    assert loaded["competing_load"] == 2 and loaded["alone_tok_s"] == alone["tok_s"]
    assert abs(loaded["load_ratio"] - loaded["tok_s"] / alone["tok_s"]) < 1e-6 * loaded["load_ratio"]
    assert spinners_of(model) == []  # the busy processes are gone with the run
    t = run(["benchmark", "--train", "--model", model, "--batch", 1, "--seq", 8, "--steps", 1, "--competing-load",
             1], env=env())
    assert t.rc == 0 and [m["competing_load"] for m in t.of_type("benchmark")] == [0, 1], t.stdout
    assert t.of_type("benchmark")[1]["load_ratio"] > 0


if __name__ == "__main__":
    run_all()
