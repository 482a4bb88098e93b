#!/usr/bin/env python3
"""A Modbus slave for mesura's tests, on pymodbus (an independent implementation).

Serves a register image read from a JSON file ({"holding": {"40000": 21365, ...},
"input": {...}, "coils": {...}, "discrete": {...}}) over TCP (--port) or RTU
(--serial). A read touching an address not in the image gets exception 2
(illegal data address); one touching a --busy address gets exception 6 (busy);
one touching an --unreachable address gets exception 11 (a gateway whose target
does not answer); one asking for more than --max-registers registers gets exception 3 (illegal
data value), as Eastron meters answer a read of more than 40 values.
Every read request is printed on stdout as one JSON line, so a test can count
them; "ready" is printed once the server listens. Writes to holding registers
(functions 6 and 16) land in the image and are printed too ({"write": ...});
one touching an address not in the image gets exception 2, one touching a
--refuse-write address exception 3 (illegal data value, as a device answers a
value it will not take), and nothing is written.
"""
import argparse
import asyncio
import json
import sys

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

TABLES = {1: "coils", 2: "discrete", 3: "holding", 4: "input"}
# pymodbus reads the written registers back with the write's own function code.
WRITES = {6: "holding", 16: "holding"}


class Image(ModbusServerContext):
    """A sparse image; skips the base class's set-up on purpose (see
    pymodbus/server/base.py: a context flagged old_simulator is called directly)."""

    def __init__(self, image, busy, unreachable, max_registers, refuse_write):  # pylint: disable=super-init-not-called
        self.old_simulator = True
        self.simdevices = []
        self.image = {t: {int(a): int(v) for a, v in image.get(t, {}).items()} for t in TABLES.values()}
        self.busy = set(busy)
        self.unreachable = set(unreachable)
        self.max_registers = max_registers
        self.refuse_write = set(refuse_write)

    def device_ids(self):
        return [0]

    async def async_getValues(self, device_id, func_code, address, count=1):
        if func_code in WRITES:
            return [self.image["holding"][a] for a in range(address, address + count)]
        print(json.dumps({"fc": func_code, "unit": device_id, "address": address, "count": count}), flush=True)
        table = TABLES.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if func_code in (3, 4) and count > self.max_registers:
            return ExcCodes.ILLEGAL_VALUE
        if any(a in self.busy for a in range(address, address + count)):
            return ExcCodes.DEVICE_BUSY
        if any(a in self.unreachable for a in range(address, address + count)):
            return ExcCodes.GATEWAY_NO_RESPONSE
        values = []
        for a in range(address, address + count):
            if a not in self.image[table]:
                return ExcCodes.ILLEGAL_ADDRESS
            values.append(bool(self.image[table][a]) if func_code in (1, 2) else self.image[table][a])
        return values

    async def async_setValues(self, device_id, func_code, address, values):
        if func_code not in WRITES:
            return ExcCodes.ILLEGAL_FUNCTION
        span = range(address, address + len(values))
        if any(a not in self.image["holding"] for a in span):
            return ExcCodes.ILLEGAL_ADDRESS
        if any(a in self.refuse_write for a in span):
            return ExcCodes.ILLEGAL_VALUE
        for a, v in zip(span, values):
            self.image["holding"][a] = v
        print(
            json.dumps({"write": True, "fc": func_code, "unit": device_id, "address": address, "values": values}),
            flush=True,
        )
        return None


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--serial")
    parser.add_argument("--baud", type=int, default=9600)
    parser.add_argument("--busy", type=int, action="append", default=[])
    parser.add_argument("--unreachable", type=int, action="append", default=[])
    parser.add_argument("--max-registers", type=int, default=125)
    parser.add_argument("--refuse-write", type=int, action="append", default=[])
    args = parser.parse_args()
    with open(args.image, encoding="utf-8") as f:
        context = Image(json.load(f), args.busy, args.unreachable, args.max_registers, args.refuse_write)
    if args.serial:
        server = ModbusSerialServer(context, port=args.serial, baudrate=args.baud, ignore_missing_devices=True)
    else:
        server = ModbusTcpServer(
            context,
            address=("127.0.0.1", args.port),
            trace_connect=lambda connected: print(json.dumps({"connected": connected}), flush=True),
        )
    await server.serve_forever(background=True)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
