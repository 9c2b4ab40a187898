"""The committed references: the baseline store (images, latents, latency, fidelity and
calibration entries per GPU model and weights), their typed entries, and provenance."""
