"""Validate a release's datapackage.json with frictionless: every table against its Table Schema
(types, constraints, primary key), every declared foreign key, and each file's bytes and SHA-256.

frictionless reads a Parquet file through pandas, which turns an empty integer or number into
NaN (then a type or range error) and a list into a NumPy array (then not an array): the stock
`frictionless validate` fails every release that has an empty year of birth, however right the
package is. Here frictionless reads the Parquet files with pyarrow instead (empty as None, lists
as lists, the file's bytes read whole so that they are counted and hashed), and everything else
is frictionless's own validation. frictionless is a development dependency (`pip install
frictionless`); the pipeline never needs it.

    python -m datafirst.release.package_check releases/v0001
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PLUGIN = "datafirst_parquet"


def _plugin() -> Any:
    """A frictionless plugin reading `format: parquet` resources with pyarrow (made on first use:
    frictionless is imported only here)."""
    from frictionless import Parser, Plugin

    class ArrowParquetParser(Parser):
        requires_loader = True  # frictionless's loader counts and hashes the bytes as they are read
        supported_types = ["array", "boolean", "date", "datetime", "integer", "number", "object", "string", "time"]

        def read_cell_stream_create(self):  # noqa: ANN202 - frictionless's signature
            stream, chunks = self.loader.byte_stream, []
            while chunk := stream.read1(1 << 20):
                chunks.append(chunk)
            table = pq.read_table(pa.BufferReader(b"".join(chunks)))
            yield table.column_names
            for batch in table.to_batches():
                yield from (list(row) for row in zip(*(column.to_pylist() for column in batch.columns)))

    class ArrowParquetPlugin(Plugin):
        def create_parser(self, resource):  # noqa: ANN001, ANN202 - frictionless's signature
            if resource.format == "parquet":
                return ArrowParquetParser(resource)
            return None

    return ArrowParquetPlugin()


def validate_release(release: Path) -> Any:
    """frictionless's report on `release`/datapackage.json (`report.valid`, `report.flatten()`)."""
    try:
        from frictionless import system, validate
    except ImportError as exc:
        raise SystemExit("frictionless is not installed: pip install 'frictionless>=5.18,<6'") from exc
    package = Path(release) / "datapackage.json"
    if not package.is_file():
        raise SystemExit(f"{package} not found: give a release folder (releases/vNNNN)")
    system.register(PLUGIN, _plugin())
    try:
        return validate(str(package))
    finally:
        system.deregister(PLUGIN)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m datafirst.release.package_check RELEASE_FOLDER", file=sys.stderr)
        return 2
    report = validate_release(Path(argv[0]))
    for task in report.tasks:
        print(f"{task.name}: {'valid' if task.valid else 'INVALID'}")
    for problem in report.flatten(["taskName", "rowNumber", "fieldName", "type", "message"]):
        print("  " + " | ".join(str(x) for x in problem))
    print("valid" if report.valid else "INVALID")
    return 0 if report.valid else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
