"""A build without MPI (NF_NO_MPI: the arm64 cross build, tests/run_arm64.sh): one process trains as usual,
and a process an MPI launcher started (mpirun's OMPI_COMM_WORLD_SIZE, PMIx's PMIX_RANK) is refused with one
`distributed` error, as is `train --processes N`, instead of N copies each training the whole run. On a build
with MPI these tests skip (test_mpi.py and test_launch.py cover it)."""
import os
import subprocess

from harness import NF, Skip, assert_error, run, run_all, test, tmpdir, write_tokens

TINY = ["--init", "--dim", "32", "--n-layers", "2", "--n-heads", "4", "--vocab-size", "256", "--seq-len", "64",
        "--seq", "32", "--batch", "2", "--lr", "3e-3", "--seed", "7"]


def need_no_mpi():
    usage = subprocess.run([NF, "--help"], capture_output=True, timeout=120).stderr.decode()
    if "This build has no MPI" not in usage:
        raise Skip("this build has MPI")


def token_data():
    path = os.path.join(tmpdir(), "train.bin")
    write_tokens(path, [(i * 7919 + i // 13) % 256 for i in range(4000)])
    return path


@test
def one_process_trains():
    need_no_mpi()
    r = run(["train"] + TINY + ["--data", token_data(), "--steps", "2"])
    assert r.rc == 0, r.stdout
    assert len(r.of_type("step")) == 2 and r.one("done")


@test
def a_launcher_is_refused_before_any_command_runs():
    need_no_mpi()
    data = token_data()
    for var, value in (("OMPI_COMM_WORLD_SIZE", "2"), ("PMIX_RANK", "0")):
        for words in (["train"] + TINY + ["--data", data, "--steps", "2"], ["tokenize", "--help"]):
            r = run(words, env=dict(os.environ, **{var: value}))
            assert_error(r, "distributed", "this build of neuralforge has no MPI")
            assert not r.of_type("step")


@test
def processes_is_refused():
    need_no_mpi()
    r = run(["train"] + TINY + ["--data", token_data(), "--steps", "2", "--processes", "2"])
    assert_error(r, "distributed", "--processes 2 needs MPI")


if __name__ == "__main__":
    run_all()
