#!/usr/bin/env bash
# Every method on structures nobody here wrote: openmmtools' trpzip2 hairpin (Amber prmtop/crd, its water
# removed, OBC2), T4 lysozyme L99A with its p-xylene ligand (Amber prmtop/crd, OBC2, ANI-1x on the ligand) and,
# for sulfur, the villin headpiece (PDB).
# The figures in docs/own-systems.md come from this script; OUT (default: own-systems) collects every output.
# Lengths: STEPS (default 2000) MD steps per run, DATA_NS (default 0.25) and VILLIN_NS (default 0.1) ns of
# reference MD per walker of trpzip2 and villin.
# Re-running it continues the reference data (--resume) and leaves earlier results alone.
set -euo pipefail
OUT=${OUT:-own-systems}
STEPS=${STEPS:-2000}
DATA_NS=${DATA_NS:-0.25}
VILLIN_NS=${VILLIN_NS:-0.1}
mkdir -p "$OUT"
DATA=$(python -c "import openmmtools, os; print(os.path.dirname(openmmtools.__file__))")/data
TRP=(--system "$DATA/trpzip2-explicit/trpzip2.prmtop" --coordinates "$DATA/trpzip2-explicit/trpzip2.crd"
     --remove-solvent --forcefield amber14-all.xml --implicit-solvent obc2)
T4=(--system "$DATA/T4-lysozyme-L99A-implicit/complex.prmtop"
    --coordinates "$DATA/T4-lysozyme-L99A-implicit/complex.crd" --implicit-solvent obc2)

once() {  # run a command unless its output exists
    local output=$1; shift
    if [ -e "$output" ]; then echo "kept $output"; else "$@"; fi
}

learn() {  # NAME NS SCORE-SAMPLES SYSTEM-OPTIONS...: reference MD (two walkers, resumable), a Ca score model
    # and a drift model (the score model's reverse SDE costs grow with the beads: measured here, trpzip2's 12
    # drew 500 in 65 s, villin's 36 drew 200 in 542 s while the test suite shared the cores)
    local name=$1 ns=$2 draws=$3; shift 3
    openmm-accel data "$@" --walkers 2 --processes 2 --duration "$ns" --chunk 0.05 --frame-interval 1 \
        --equilibration 20 --output "$OUT/$name-data" --no-progress \
        $([ -e "$OUT/$name-data/settings.json" ] && echo --resume)
    once "$OUT/$name-ca.npz" openmm-accel train score --data "$OUT/$name-data" --mapping ca --epochs 200 \
        --output "$OUT/$name-ca.npz" --no-progress
    once "$OUT/$name-drift.npz" openmm-accel train drift --data "$OUT/$name-data" --generator internal \
        --epochs 200 --output "$OUT/$name-drift.npz" --no-progress
    once "$OUT/$name-ca.dcd" openmm-accel sample --method score --score-model "$OUT/$name-ca.npz" -n "$draws" \
        --output "$OUT/$name-ca.dcd"
    once "$OUT/$name-drift.dcd" openmm-accel sample --method drift --drift-model "$OUT/$name-drift.npz" -n 500 \
        --output "$OUT/$name-drift.dcd" --no-progress
    python examples/compare_to_held_out.py "$OUT/$name-data" "$OUT/$name-ca.npz" "$OUT/$name-ca.dcd" \
        "$OUT/$name-drift.npz" "$OUT/$name-drift.dcd" --json "$OUT/$name-comparison.json"
}

# trpzip2: ANI-1x on the whole hairpin with OBC2 solvation, plain Langevin and LSD with Amber14 (mm) or one
# ANI-1x network (member) as the draft
for run in plain lsd-mm lsd-member; do
    once "$OUT/trpzip2-$run" openmm-accel run "${TRP[@]}" --model ani1x --method "${run%%-*}" \
        $([ "$run" != plain ] && echo --draft "${run#lsd-}") --timestep 0.5 --friction 10 --steps "$STEPS" \
        --platform CPU --seed 1 --output "$OUT/trpzip2-$run" --no-progress
done

# trpzip2: Amber14/OBC2 reference MD, a Ca score model and a drift model from it, compared with held-out MD
learn trpzip2 "$DATA_NS" 500 "${TRP[@]}"

# trpzip2: FlashMD at an 8 fs stride learned from Amber14/OBC2 NVE data (83 minutes of training here, one
# thread), 10 ps of it against 10 ps of plain MD at 0.5 fs, compared side by side
once "$OUT/trpzip2-flashmd8.pt" openmm-accel train flashmd "${TRP[@]}" --model mm --stride 8 --epochs 6 \
    --threads 1 --output "$OUT/trpzip2-flashmd8.pt" --no-progress
once "$OUT/trpzip2-flashmd" openmm-accel run "${TRP[@]}" --model mm --method flashmd \
    --flashmd-model "$OUT/trpzip2-flashmd8.pt" --steps 1250 --report-interval 10 --seed 1 \
    --output "$OUT/trpzip2-flashmd" --no-progress
once "$OUT/trpzip2-mm-plain" openmm-accel run "${TRP[@]}" --model mm --timestep 0.5 --friction 10 --steps 20000 \
    --report-interval 160 --seed 1 --velocities --output "$OUT/trpzip2-mm-plain" --no-progress
python examples/compare_runs.py "$OUT/trpzip2-mm-plain" "$OUT/trpzip2-flashmd" --json "$OUT/trpzip2-flashmd.json"

# T4 lysozyme L99A: ANI-1x on the ligand (resname TMP), Amber/OBC2 on the protein; plain and LSD
for method in plain lsd; do
    once "$OUT/t4-$method" openmm-accel run "${T4[@]}" --model ani1x --ml-atoms "resname TMP" \
        --method "$method" $([ "$method" = lsd ] && echo --draft mm) --timestep 0.5 --friction 10 \
        --steps "$STEPS" --platform CPU --seed 1 --output "$OUT/t4-$method" --no-progress
done
python examples/check_mlmm_energy.py "$OUT/t4-plain" --json "$OUT/t4-energy-check.json"

# Sulfur: the villin headpiece (1VII, 36 residues, two methionines; pdbfixer's test structure) in Amber14/OBC2
# (its NMR file's dummy unit cell is dropped with --remove-solvent). No ML potential with sulfur is available
# offline (the torchani wheel's ANI-2x files are empty), so the learned methods learn its force field's MD.
VIL=(--system "$(python -c "import pdbfixer, os; print(os.path.dirname(pdbfixer.__file__))")/tests/data/test.pdb"
     --forcefield amber14-all.xml --implicit-solvent obc2 --remove-solvent)
learn villin "$VILLIN_NS" 200 "${VIL[@]}"

