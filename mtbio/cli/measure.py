"""``mtbio measure STORE OUT``: label the objects of a prediction store and write a per-object table.

The labels come from :func:`mtbio.inference.instances.label_blockwise` (connected components, or the blockwise
seeded watershed with ``--split watershed``); the table from :func:`mtbio.inference.measure.measure_labels`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TABLE_SUFFIXES = (".csv", ".parquet")


def register(subparsers: Any) -> None:
    from mtbio.inference.measure import DEFAULT_RAM_BUDGET, DEFAULT_SURFACE_SIGMA

    parser = subparsers.add_parser(
        "measure",
        help="label the mitochondria of a prediction store and write a per-object table (CSV / Parquet)",
        description=(
            "Threshold the foreground probability of a finished prediction store, label its objects block by "
            "block (connected components, or a seeded watershed that splits touching objects) and measure "
            "every object within a RAM budget: voxel count, volume, surface, equivalent diameter, bounding box, "
            "centroid, principal axes, elongation, border contact. 2D stores report area and perimeter."
        ),
    )
    parser.add_argument("store", metavar="STORE", help="prediction store (mtbio predict output)")
    parser.add_argument("out", metavar="OUT", help="the table: OUT.csv or OUT.parquet (Parquet needs mtbio[measure])")
    parser.add_argument("--threshold", type=float, default=0.5, help="foreground is prob >= THRESHOLD (0.5)")
    parser.add_argument(
        "--split",
        choices=("none", "watershed"),
        default="none",
        help="none: connected components; watershed: split touching objects at h-maxima of the distance transform",
    )
    parser.add_argument("--h", type=float, default=2.0, help="watershed seeds: h-maxima depth in nm (2)")
    parser.add_argument("--halo", type=int, default=16, help="watershed: voxels read around each block (16)")
    parser.add_argument("--connectivity", type=int, default=1, help="1 = faces (default) ... ndim = corners")
    parser.add_argument(
        "--labels-out",
        default=None,
        metavar="PATH",
        help="also keep the labels: PATH.tif / .tiff = multi-page TIF, anything else = an OME-Zarr label image",
    )
    parser.add_argument(
        "--ram-budget",
        type=float,
        default=DEFAULT_RAM_BUDGET / 2**20,
        metavar="MIB",
        help=f"working memory of the measurement in MiB ({DEFAULT_RAM_BUDGET // 2**20})",
    )
    parser.add_argument(
        "--surface-sigma",
        type=float,
        default=DEFAULT_SURFACE_SIGMA,
        help=f"smoothing (voxels) before marching cubes; 0 = binary mask ({DEFAULT_SURFACE_SIGMA})",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT and --labels-out when they exist")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    parser.set_defaults(func=run)


def _check_outputs(out: Path, labels_out: Path | None, overwrite: bool) -> None:
    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"{out}: the table is written as .csv or .parquet, got suffix {out.suffix!r}")
    for path in (out, labels_out):
        if path is not None and path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    if out.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ModuleNotFoundError as err:
            raise ValueError(f"{out}: Parquet needs pyarrow: pip install 'mtbio[measure]' (or write a .csv)") from err


def run(args: argparse.Namespace) -> int:
    import tempfile

    import zarr

    from mtbio.data.store import open_prediction_store
    from mtbio.inference.instances import WatershedSplit, label_blockwise
    from mtbio.inference.label_export import create_label_image, is_tif_path, write_labels_tif
    from mtbio.inference.measure import measure_labels

    out = Path(args.out)
    labels_out = None if args.labels_out is None else Path(args.labels_out)
    _check_outputs(out, labels_out, args.overwrite)
    store = open_prediction_store(args.store, require_complete=True)
    if store.meta.get("activation", "softmax") is None:
        raise ValueError(f"{args.store}: the store holds raw network output (activation None), not probabilities")
    shape, voxel_size = store.spatial_shape, store.voxel_size
    chunks = tuple(int(c) for c in store.array.chunks[1:])
    split = None
    if args.split == "watershed":
        split = WatershedSplit(h=args.h, halo=args.halo, sampling=voxel_size)
    options = {"threshold": args.threshold, "split": args.split, "connectivity": args.connectivity}
    if split is not None:
        options |= {"h": split.h, "halo": split.halo}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".mtbio-measure-") as tmp:
        if labels_out is not None and not is_tif_path(labels_out):
            meta = {"source": str(store.path), "complete": False, **options}
            target = create_label_image(
                labels_out, shape, chunks=chunks, voxel_size=voxel_size, meta=meta, overwrite=args.overwrite
            )
        else:
            target = zarr.create_array(str(Path(tmp) / "labels.zarr"), shape=shape, chunks=chunks, dtype="uint32")
        label_blockwise(
            store.foreground(), target, threshold=args.threshold, connectivity=args.connectivity, split=split
        )
        table = measure_labels(
            target, voxel_size, ram_budget=int(args.ram_budget * 2**20), surface_sigma=args.surface_sigma
        )
        if labels_out is not None and is_tif_path(labels_out):
            write_labels_tif(target, labels_out, voxel_size=voxel_size, overwrite=args.overwrite)
        elif labels_out is not None:
            group = zarr.open_group(str(labels_out), mode="r+")
            group.attrs["mtbio"] = {**dict(group.attrs["mtbio"]), "complete": True, "num_instances": len(table)}
    table.write(out)
    summary = {"store": str(store.path), "table": str(out), "labels": None if labels_out is None else str(labels_out)}
    summary |= table.summary() | options
    if args.json:
        print(json.dumps(summary))
    else:
        size = table.size_column
        unit = "nm^3" if table.ndim == 3 else "nm^2"
        print(
            f"{store.path}: {summary['objects']} object(s); total {size.split('_')[0]} "
            f"{summary[f'total_{size}']:.6g} {unit}, median {size.split('_')[0]} {summary[f'median_{size}']:.6g} "
            f"{unit} -> {out}"
        )
    return 0
