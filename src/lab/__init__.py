"""lab: reproductions of retrieval-distillation papers (FIRST, LaSER, NanoVDR, SpeContext).

Core modules (config, paths, tracking, records) import no ML libraries; shared layers live in
lab.data, lab.models, lab.eval, ...; lab.methods.<paper> only wires those layers.
"""

__version__ = "0.1.0"
