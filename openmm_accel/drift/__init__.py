"""Force-guided drifting (Hu 2026, arXiv:2603.05527): a one-step generator of Boltzmann-distributed conformations
trained with the drifting objective, with force guidance that undoes bias in the training data. So far the
field and its guidance (:mod:`.field`); see docs/drift.md."""
