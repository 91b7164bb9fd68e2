"""Benchmark converters: raw public downloads -> datasets in the tcsa-uda contract.

One converter per download (``tcsa-uda convert <name>``), each writing ``dataset.json``,
NIfTI volumes, ``split.json`` and ``summary.json``, then verifying its output:

``mmwhs``       MM-WHS 2017 CT and MR NIfTI (:func:`convert_mmwhs`)
``mmwhs-sifa``  the SIFA / PnP-AdaNet preprocessed MM-WHS release: its tfrecords and test NIfTI, or the
                MPSCL / TCSA-UDA numpy copy with its datalists (:func:`convert_mmwhs_sifa`)
``abdomen``     CHAOS T2-SPIR DICOM + PNG masks and BTCV CT NIfTI (:func:`convert_abdomen`)
``brats``       BraTS FLAIR and T2 over disjoint patients (:func:`convert_brats`)

See docs/reproduce.md for the commands from download to table.
"""

from tcsa_uda.data.convert.abdomen import convert_abdomen
from tcsa_uda.data.convert.brats import convert_brats
from tcsa_uda.data.convert.mmwhs import convert_mmwhs
from tcsa_uda.data.convert.mmwhs_sifa import convert_mmwhs_sifa
from tcsa_uda.data.convert.writer import ConversionResult, format_summary

__all__ = [
    "ConversionResult",
    "convert_abdomen",
    "convert_brats",
    "convert_mmwhs",
    "convert_mmwhs_sifa",
    "format_summary",
]
