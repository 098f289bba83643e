"""Paper methods: one package per paper, ``lab.methods.<paper>``, wiring data, models, losses and evaluation
for that paper's stages. Each holds ``config.py`` (its ``params.yaml`` section schema: ``SECTION``, ``SCHEMA``;
found by :mod:`lab.config`) and its wiring modules; a paper's package never imports another paper's."""
