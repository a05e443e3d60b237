"""Force-guided drifting (METHODS.md section 4): a one-step generator of Boltzmann-distributed conformations
trained with the drifting objective, with force guidance that undoes bias in the training data. So far the
field and its guidance (:mod:`.field`); see docs/drift.md."""
