"""What every learned method shares, in one place: reference MD sampling (:mod:`.sampling`), the dataset
format (:mod:`.dataset`), force labels (:func:`openmm_accel.models.base.label_forces`), the trainer
(:mod:`.trainer`) and the versioned model-file format (:mod:`.model_file`)."""
