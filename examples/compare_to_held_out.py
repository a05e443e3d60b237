"""Compare a Ca score model's and a drift model's samples of a protein with held-out reference MD.

    python examples/compare_to_held_out.py DATA SCORE_MODEL SCORE_SAMPLES DRIFT_MODEL DRIFT_SAMPLES [--json OUT]

Held out: the frames of each walker after those the models trained on (their files record how many). On the
alpha carbons of every sample and held-out frame: the total variation distance (TVD) of each Ca-Ca
distance's histogram (pairs at least two residues apart, averaged), the mean absolute difference of the
contact map (Ca-Ca < 0.8 nm) and the TVD of the radius of gyration. Each comes with the noise floor of the
held-out MD itself at the sample's size (``analysis.reference_and_floor``: the first half of every walker's
held-out frames is the reference, as many frames from the second halves as the sample has stand in for a
perfect sampler), so that a figure is read against what that many draws of MD would score.
"""
import argparse
import json

import mdtraj
import numpy as np

from openmm_accel.analysis import reference_and_floor
from openmm_accel.drift.benchmark import distance_tvd
from openmm_accel.learning.model_file import read_model
from openmm_accel.learning.reference import load_reference

CONTACT_NM = 0.8


def ca_features(ca: np.ndarray) -> dict:
    """Ca-Ca distances of pairs >= 2 apart ``(M, P)``, contacts, radius of gyration ``(M,)``."""
    i, j = np.triu_indices(ca.shape[1], k=2)
    distances = np.linalg.norm(ca[:, i] - ca[:, j], axis=-1)
    centred = ca - ca.mean(1, keepdims=True)
    return {"distances": distances, "contacts": distances < CONTACT_NM,
            "radius_of_gyration": np.sqrt((centred ** 2).sum(-1).mean(1))[:, None]}


def scores(reference: np.ndarray, other: np.ndarray) -> dict:
    a, b = ca_features(reference), ca_features(other)
    return {"ca_distance_tvd": float(distance_tvd(a["distances"], b["distances"], 50).mean()),
            "contact_map_mad": float(np.abs(a["contacts"].mean(0) - b["contacts"].mean(0)).mean()),
            "radius_of_gyration_tvd": float(distance_tvd(a["radius_of_gyration"], b["radius_of_gyration"], 50)[0])}


def compare(data, held_ca: np.ndarray, drawn_ca: np.ndarray) -> dict:
    reference, floor_frames = reference_and_floor(held_ca, len(drawn_ca))
    return {"samples": len(drawn_ca), "reference_frames": len(reference), **scores(reference, drawn_ca),
            "noise_floor": scores(reference, floor_frames)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("data", "score_model", "score_samples", "drift_model", "drift_samples"):
        parser.add_argument(name)
    parser.add_argument("--json")
    args = parser.parse_args()
    data = load_reference(args.data)
    ca = [atom.index for atom in data.topology.atoms() if atom.name == "CA"]
    results = {}
    for method, model, samples in (("score", args.score_model, args.score_samples),
                                   ("drift", args.drift_model, args.drift_samples)):
        kept = read_model(model, method, f"{method} model")[0]["metadata"]["data"]["training_frames_per_walker"]
        held = data.positions[:, kept:][:, :, ca].astype(np.float64)
        drawn = mdtraj.load(samples, top=samples + ".pdb")
        atoms = [a.index for a in drawn.topology.atoms if a.name == "CA"]
        results[method] = compare(data, held, drawn.xyz[:, atoms].astype(np.float64))
        print(f"{method}: " + ", ".join(f"{key} {value:.3f} (floor {results[method]['noise_floor'][key]:.3f})"
                                        for key, value in results[method].items()
                                        if key.endswith(("tvd", "mad"))))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
