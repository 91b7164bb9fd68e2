"""tcsa-uda: cross-modality unsupervised domain adaptation for medical image segmentation.

The package is organised by pipeline stage (see docs/extending.md):
``data`` (dataset contract, verification, phantom benchmark, slice preparation), ``text``
(class prompts and frozen text embeddings), ``models``, ``losses``, ``methods`` (one file per
adaptation method), ``engine`` (training loop, checkpoints), ``evaluation`` and ``cli``.
"""

from tcsa_uda.errors import TcsaUdaError

__version__ = "0.1.0"
__all__ = ["TcsaUdaError", "__version__"]
