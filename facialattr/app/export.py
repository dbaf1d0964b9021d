"""``facialattr export``: a trained Keras model into the Triton model repository.

Registering imports nothing of the export part (its modules pull in tritonclient, and
TensorFlow when exporting), so a tuning flag left out is None here and takes
:class:`~facialattr.export.exporter.ExportOptions`' default, the one home of those defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facialattr.app import flags
from facialattr.errors import EXIT_OK

# flag dest -> ExportOptions field, for the flags whose default is ExportOptions'
_TUNING = {"max_batch_size": "max_batch_size", "instances": "instance_count", "opset": "opset",
           "parity_tolerance": "parity_tolerance", "int8_calibration_images": "int8_calibration_images"}
_EXPORTERS = " (default: the exporter's, docs/EXPORT.md)"


def register(subparsers) -> None:
    """Add the ``export`` subcommand to the ``facialattr`` parser."""
    p = subparsers.add_parser(
        "export", help="convert a trained model to ONNX, check parity, and add it to the model repository",
        description="Convert MODEL (a training run folder with model.keras and contract.json, or a .keras file "
                    "with --contract) to ONNX, check that ONNX Runtime reproduces it, and write it as a new "
                    "version of facial_attributes in the repository.",
    )
    p.add_argument("model", type=Path, metavar="MODEL", help="training run folder, or a .keras file")
    p.add_argument("--contract", type=Path, help="contract.json (default: MODEL/contract.json)")
    flags.add_model_repository(p, old_spelling="--repository", what="model repository to write")
    p.add_argument("--version", type=int, help="version number to write (default: the next free one)")
    p.add_argument("--replace", action="store_true",
                   help="regenerate the model folder completely: earlier versions are removed")
    p.add_argument("--max-batch-size", type=int, help="Triton max_batch_size" + _EXPORTERS)
    p.add_argument("--instances", type=int, help="model instances per device" + _EXPORTERS)
    p.add_argument("--opset", type=int, help="ONNX opset" + _EXPORTERS)
    p.add_argument("--tensorrt-fp16", action="store_true",
                   help="GPU container: run through ONNX Runtime's TensorRT provider in FP16")
    p.add_argument("--parity-images", type=Path, metavar="DIR",
                   help="images for the parity gate (default: scikit-image's sample photographs)")
    p.add_argument("--parity-tolerance", type=float,
                   help="largest allowed |Keras - ONNX| on any probability" + _EXPORTERS)
    p.add_argument("--int8-calibration", type=Path, metavar="DIR",
                   help="CelebA folder: also build a static INT8 model for CPUs, calibrated and gated on its val split")
    p.add_argument("--int8-calibration-images", type=int,
                   help="val images used for calibration; the rest of val grades INT8" + _EXPORTERS)
    p.add_argument("--int8-eval-images", type=int, help="evaluate INT8 on at most this many val images (default: all)")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from facialattr.export.exporter import ExportOptions, export_model

    tuning = {field: getattr(args, dest) for dest, field in _TUNING.items() if getattr(args, dest) is not None}
    options = ExportOptions(
        repository=flags.model_repository(args), version=args.version, replace=args.replace,
        tensorrt_fp16=args.tensorrt_fp16, parity_images=args.parity_images, int8_calibration=args.int8_calibration,
        int8_eval_images=args.int8_eval_images, **tuning,
    )
    result = export_model(args.model, options, contract_path=args.contract)
    diffs = ", ".join(f"batch {b}: {d:.1e}" for b, d in result.parity.max_abs_diff_by_batch.items())
    print(f"exported {result.version_dir} (parity max |diff| {diffs}; tolerance {result.parity.tolerance:.0e})")
    for report in result.int8_attempts:
        verdict = "passed" if report.passed else f"failed ({'; '.join(report.failures())})"
        print(f"INT8 gate {verdict}: {report.describe()}")
    if result.int8_attempts:
        print(f"INT8 model: {result.int8_version_dir or 'none written'}")
    print("restart `facialattr serve` to serve the new version (Triton serves the highest version)")
    return EXIT_OK
