"""``facialattr export``: a trained Keras model into the Triton model repository (imports TensorFlow lazily)."""

from __future__ import annotations

import argparse
from pathlib import Path

from facialattr.errors import EXIT_OK

DEFAULT_REPOSITORY = "model_repository"


def register(subparsers) -> None:
    """Add the ``export`` subcommand to the ``facialattr`` parser (defaults from :class:`ExportOptions`)."""
    from facialattr.export.exporter import ExportOptions  # light: TensorFlow and ONNX load when exporting

    p = subparsers.add_parser(
        "export", help="convert a trained model to ONNX, check parity, and add it to the model repository",
        description="Convert MODEL (a training run folder with model.keras and contract.json, or a .keras file "
                    "with --contract) to ONNX, check that ONNX Runtime reproduces it, and write it as a new "
                    "version of facial_attributes in the repository.",
    )
    p.add_argument("model", type=Path, metavar="MODEL", help="training run folder, or a .keras file")
    p.add_argument("--contract", type=Path, help="contract.json (default: MODEL/contract.json)")
    p.add_argument("--repository", type=Path, default=Path(DEFAULT_REPOSITORY), help="model repository (default: %(default)s)")
    p.add_argument("--version", type=int, help="version number to write (default: the next free one)")
    p.add_argument("--replace", action="store_true",
                   help="regenerate the model folder completely: earlier versions are removed")
    p.add_argument("--max-batch-size", type=int, default=ExportOptions.max_batch_size, help="Triton max_batch_size (default: %(default)s)")
    p.add_argument("--instances", type=int, default=ExportOptions.instance_count, help="model instances per device (default: %(default)s)")
    p.add_argument("--opset", type=int, default=ExportOptions.opset, help="ONNX opset (default: %(default)s)")
    p.add_argument("--tensorrt-fp16", action="store_true",
                   help="GPU container: run through ONNX Runtime's TensorRT provider in FP16")
    p.add_argument("--parity-images", type=Path, metavar="DIR",
                   help="images for the parity gate (default: scikit-image's sample photographs)")
    p.add_argument("--parity-tolerance", type=float, default=ExportOptions.parity_tolerance,
                   help="largest allowed |Keras - ONNX| on any probability (default: %(default)s)")
    p.add_argument("--int8-calibration", type=Path, metavar="DIR",
                   help="CelebA folder: also build a static INT8 model for CPUs, calibrated and gated on its val split")
    p.add_argument("--int8-calibration-images", type=int, default=ExportOptions.int8_calibration_images,
                   help="val images used for calibration; the rest of val grades INT8 (default: %(default)s)")
    p.add_argument("--int8-eval-images", type=int, help="evaluate INT8 on at most this many val images (default: all)")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from facialattr.export.exporter import ExportOptions, export_model

    options = ExportOptions(
        repository=args.repository, version=args.version, replace=args.replace, opset=args.opset,
        max_batch_size=args.max_batch_size, instance_count=args.instances, tensorrt_fp16=args.tensorrt_fp16,
        parity_images=args.parity_images, parity_tolerance=args.parity_tolerance,
        int8_calibration=args.int8_calibration, int8_eval_images=args.int8_eval_images,
        int8_calibration_images=args.int8_calibration_images,
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
