"""The model and one generation: where the weights come from (synthetic, tiny, a checkpoint),
the pipeline, the scenarios, the inputs, and a generation timed per stage."""
