"""The generator runtime every other part builds on: networks, the W+ table, checkpoints and converters, latents and rendering."""
