"""tcsa-uda: cross-modality unsupervised domain adaptation for medical image segmentation.

The package is organised by pipeline stage, lowest layer first (docs/extending.md): core modules
(``errors``, ``atomic``, ``paths``, ``config``, ``train_config``, ``layout``), ``data`` (dataset
contract, verification, converters, phantom benchmark, slice preparation), then ``metrics``,
``text`` (class prompts and frozen text embeddings), ``models`` and ``losses``, then ``methods``
(one file per adaptation method), ``engine`` (training loop, checkpoints, selection),
``evaluation`` (inference, evaluator, predict, reports) and on top ``demo``, ``bench`` and ``cli``.
"""

from tcsa_uda.errors import TcsaUdaError

__version__ = "0.1.0"
__all__ = ["TcsaUdaError", "__version__"]
