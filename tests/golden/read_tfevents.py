#!/usr/bin/python3
"""An independent reader of TensorBoard event files, for loco's tests.

Written from the format's description, not from loco's C++ (src/train/tensorboard.cpp): TFRecords
    uint64 length (LE) | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)
whose data is a serialized tensorflow.Event, decoded by hand:
    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

usage: read_tfevents.py FILE_OR_DIR
Reads the file (or every events.out.tfevents.* file in the directory, in name order), checks both
CRCs of every record, that each file starts with file_version "brain.Event:2" and that nothing
else is malformed, then prints one JSON object:
    {"files": N, "events": [{"file": I, "wall_time": W, "step": S, "scalars": {tag: value}}]}
On any problem it prints "tfevents: FAIL <reason>" and exits 1. Debian ships no TensorBoard, so
this stands in for its EventAccumulator.
"""
import json
import os
import struct
import sys


def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# Known answers (the CRC-32C check value and RFC 3720's 32 zero bytes), so a wrong table fails here.
assert crc32c(b"123456789") == 0xE3069283
assert crc32c(bytes(32)) == 0x8A9136AA


class Malformed(Exception):
    pass


def read_records(blob):
    records, pos = [], 0
    while pos < len(blob):
        if len(blob) - pos < 12:
            raise Malformed(f"torn record header at byte {pos}")
        header = blob[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", blob[pos + 8:pos + 12])
        if length_crc != masked_crc32c(header):
            raise Malformed(f"length CRC mismatch at byte {pos}")
        end = pos + 12 + length
        if end + 4 > len(blob):
            raise Malformed(f"record at byte {pos} runs past the end of the file")
        data = blob[pos + 12:end]
        (data_crc,) = struct.unpack("<I", blob[end:end + 4])
        if data_crc != masked_crc32c(data):
            raise Malformed(f"data CRC mismatch in record at byte {pos}")
        records.append(data)
        pos = end + 4
    return records


def fields(msg):
    """Yields (field number, wire type, value) of a protobuf message."""
    pos = 0

    def varint():
        nonlocal pos
        v, shift = 0, 0
        while True:
            if pos >= len(msg) or shift > 63:
                raise Malformed("bad varint")
            b = msg[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v

    while pos < len(msg):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 1:
            value, pos = msg[pos:pos + 8], pos + 8
        elif wire == 2:
            n = varint()
            value, pos = msg[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = msg[pos:pos + 4], pos + 4
        else:
            raise Malformed(f"wire type {wire}")
        if pos > len(msg):
            raise Malformed("field runs past the message")
        yield number, wire, value


def decode_event(data):
    event = {"wall_time": None, "step": 0, "file_version": None, "scalars": None}
    for number, wire, value in fields(data):
        if (number, wire) == (1, 1):
            (event["wall_time"],) = struct.unpack("<d", value)
        elif (number, wire) == (2, 0):
            event["step"] = value - (1 << 64) if value >= 1 << 63 else value
        elif (number, wire) == (3, 2):
            event["file_version"] = value.decode("utf-8")
        elif (number, wire) == (5, 2):
            event["scalars"] = {}
            for vnum, vwire, v in fields(value):
                if (vnum, vwire) != (1, 2):
                    raise Malformed(f"unexpected Summary field {vnum}")
                tag, simple = None, None
                for fnum, fwire, f in fields(v):
                    if (fnum, fwire) == (1, 2):
                        tag = f.decode("utf-8")
                    elif (fnum, fwire) == (2, 5):
                        (simple,) = struct.unpack("<f", f)
                    else:
                        raise Malformed(f"unexpected Value field {fnum}")
                if tag is None or simple is None:
                    raise Malformed("Value without tag or simple_value")
                event["scalars"][tag] = simple
        else:
            raise Malformed(f"unexpected Event field {number} (wire type {wire})")
    if event["wall_time"] is None:
        raise Malformed("Event without wall_time")
    return event


def read_file(path):
    with open(path, "rb") as f:
        records = read_records(f.read())
    if not records:
        raise Malformed(f"{path}: no records")
    events = [decode_event(r) for r in records]
    if events[0]["file_version"] != "brain.Event:2":
        raise Malformed(f"{path}: first event is not file_version brain.Event:2")
    for e in events[1:]:
        if e["scalars"] is None:
            raise Malformed(f"{path}: event at step {e['step']} has no summary")
    return events[1:]


def main(target):
    if os.path.isdir(target):
        paths = sorted(os.path.join(target, n) for n in os.listdir(target)
                       if n.startswith("events.out.tfevents."))
    else:
        paths = [target]
    if not paths:
        raise Malformed(f"{target}: no event files")
    out = []
    for i, path in enumerate(paths):
        for e in read_file(path):
            out.append({"file": i, "wall_time": e["wall_time"], "step": e["step"],
                        "scalars": e["scalars"]})
    print(json.dumps({"files": len(paths), "events": out}, allow_nan=True))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        main(sys.argv[1])
    except (Malformed, OSError, UnicodeDecodeError, struct.error) as e:
        print(f"tfevents: FAIL {e}")
        sys.exit(1)
