#!/usr/bin/env python3
"""Reads a Parquet file with pyarrow (an independent implementation) for mesura's tests.

Prints one JSON object: the column names and their Arrow types as pyarrow reads
them, the file's key/value metadata, the number of row groups, and the data column
by column ("data": {name: [values]}); timestamps as integers (milliseconds since
1970-01-01 as stored: UTC, or the wall clock for a timestamp not adjusted to UTC),
doubles as their IEEE 754 bit patterns (signed 64-bit integers), so the test compares
them exactly whatever its JSON parser's float rounding.
With --zone NAME, "offsets_ms" is each row's UTC offset in that IANA zone at the
instant `ts` (unix seconds), computed by Python's zoneinfo, so the test can check
a local-time column without trusting mesura's clock code.

    parquet_compare.py FILE [--zone Europe/Amsterdam]
"""
import argparse
import datetime
import json
import struct
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--zone")
    args = parser.parse_args()

    parquet = pq.ParquetFile(args.file)
    table = parquet.read()
    metadata = {
        k.decode("utf-8"): v.decode("utf-8")
        for k, v in (parquet.metadata.metadata or {}).items()
    }
    data = {}
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        values = column.to_pylist()
        if pa.types.is_floating(column.type):
            values = [None if v is None else struct.unpack("<q", struct.pack("<d", v))[0] for v in values]
        data[name] = values
    out = {
        "columns": table.column_names,
        "types": {f.name: str(f.type) for f in table.schema},
        "metadata": metadata,
        "row_groups": parquet.metadata.num_row_groups,
        "rows": table.num_rows,
        "data": data,
    }
    if args.zone:
        from zoneinfo import ZoneInfo

        zone = ZoneInfo(args.zone)
        out["offsets_ms"] = [
            int(datetime.datetime.fromtimestamp(ts, zone).utcoffset().total_seconds() * 1000)
            for ts in data["ts"]
        ]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
