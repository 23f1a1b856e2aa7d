"""Stage 2: DiT-DH, the flow-matching path, samplers and the generation
model."""
from . import dit_dh, flow_path, generation_model, samplers  # noqa: F401
