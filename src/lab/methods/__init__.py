"""Paper methods: each module wires data, models, losses and evaluation for one paper's stages."""
