#!/usr/bin/python3
"""Speed of each CPU tier of the hand-written kernels on this machine, in one
invocation: the tiers are alternated round by round so that they share the
same minutes, and each cell is the median of the rounds.

    /usr/bin/python3 bench/cpu_tiers.py [--rounds 3] [--preset 110M] [--tiers native,avx2,baseline]

Tiers: `native` (what the CPU has; oneDNN as it chooses), `avx2`
(NF_CPU=avx2 and oneDNN held to AVX2 with ONEDNN_MAX_CPU_ISA=AVX2: what an
AVX2 desktop runs) and `baseline` (NF_CPU=baseline, oneDNN held to AVX2: the
portable C). Measured per tier: full fp32 training (batch 4 x 256) with its
fraction of the GEMM peak that `benchmark` measures under the same setting,
and generation (16 prompt tokens, then 128 greedy tokens) with fp32 and q8
weights, with the fraction of the measured read bandwidth. Prints one
markdown table and the commands it ran."""
import argparse
import json
import os
import statistics
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NF = os.path.join(ROOT, "build", "neuralforge")
TIER_ENV = {
    "native": {},
    "avx2": {"NF_CPU": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "baseline": {"NF_CPU": "baseline", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}


def benchmark(args, tier):
    env = {**os.environ, **TIER_ENV[tier]}
    r = subprocess.run([NF, "benchmark", *args], env=env, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"{tier}: neuralforge benchmark {' '.join(args)} failed: {r.stdout.strip()[-400:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--preset", default="110M")
    ap.add_argument("--tiers", default="native,avx2,baseline")
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    tiers = a.tiers.split(",")
    for t in tiers:
        if t not in TIER_ENV:
            raise SystemExit(f"--tiers: unknown tier {t!r} (native, avx2, baseline)")
    cases = {
        "train": ["--train", "--preset", a.preset, "--batch", "4", "--steps", str(a.steps)],
        "fp32": ["--generate", "--preset", a.preset, "--prompt-tokens", "16", "--tokens", "128"],
        "q8": ["--generate", "--preset", a.preset, "--prompt-tokens", "16", "--tokens", "128", "--quant", "q8"],
    }
    results = {t: {c: [] for c in cases} for t in tiers}
    kernels = {}
    for r in range(a.rounds):
        for case, args in cases.items():
            for t in tiers:
                m = benchmark(args, t)
                kernels[t] = m.get("kernels")
                results[t][case].append(m)
                rate = m["tok_s"]
                print(f"round {r + 1} {case:5s} {t:8s} {rate:8.1f} tok/s", flush=True)

    def med(t, case, key):
        vals = [m[key] for m in results[t][case] if m.get(key) is not None]
        return statistics.median(vals) if vals else float("nan")

    print()
    print("| tier (`kernels`) | train tok/s | of GEMM peak | fp32 decode tok/s | bandwidth use | q8 decode tok/s |"
          " bandwidth use |")
    print("|---|---|---|---|---|---|---|")
    for t in tiers:
        print(f"| {t} (`{kernels[t]}`) | {med(t, 'train', 'tok_s'):.0f} | {med(t, 'train', 'mfu'):.0%} "
              f"| {med(t, 'fp32', 'tok_s'):.1f} | {med(t, 'fp32', 'bandwidth_use'):.2f} "
              f"| {med(t, 'q8', 'tok_s'):.1f} | {med(t, 'q8', 'bandwidth_use'):.2f} |")
    print()
    for case, args in cases.items():
        print(f"{case}: neuralforge benchmark {' '.join(args)}")
    with open("/proc/loadavg") as f:
        print("load average after:", f.read().strip())


if __name__ == "__main__":
    main()
