#!/usr/bin/env python3
"""Plays the REHAU Nea Smart 2.0 base station (the Modbus master) for mesura's
tests, on pymodbus: writes registers into the gateway over TCP and exits.

Each argument is UNIT:ADDRESS:VALUE[,VALUE...]; one value is sent with function 6
(write single register, as the base does), several with function 16. With --read,
each argument is UNIT:ADDRESS and the base reads that command register back with
function 3, as it does for setpoints; each value is printed as "UNIT:ADDRESS=VALUE"
(or "UNIT:ADDRESS=exception N").
"""
import argparse
import sys

from pymodbus.client import ModbusTcpClient


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--read", action="store_true")
    parser.add_argument("writes", nargs="+")
    args = parser.parse_args()
    client = ModbusTcpClient("127.0.0.1", port=args.port, timeout=5)
    if not client.connect():
        sys.exit("cannot connect to the gateway")
    if args.read:
        for read in args.writes:
            unit, address = read.split(":")
            result = client.read_holding_registers(int(address), count=1, device_id=int(unit))
            value = f"exception {result.exception_code}" if result.isError() else result.registers[0]
            print(f"{unit}:{address}={value}", flush=True)
        client.close()
        return
    for write in args.writes:
        unit, address, values = write.split(":")
        words = [int(v, 0) for v in values.split(",")]
        if len(words) == 1:
            result = client.write_register(int(address), words[0], device_id=int(unit))
        else:
            result = client.write_registers(int(address), words, device_id=int(unit))
        if result.isError():
            sys.exit(f"write {write} failed: {result}")
    client.close()
    print("written", flush=True)


if __name__ == "__main__":
    main()
