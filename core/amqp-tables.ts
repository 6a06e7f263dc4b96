/**
 * A fallback for amqplib's field-table decoder. amqplib 2.3 cannot read every type a broker
 * passes through: py-amqp writes integers beyond 32 bits as `L` (unsigned 64), and amqplib
 * throws on that tag inside its frame parser. The connection then dies, the broker
 * redelivers the same message, and every consumer of the queue crash-loops on it.
 *
 * Importing this module before amqplib replaces amqplib's table decoder with one that first
 * tries amqplib's own and, only when that throws, decodes the table itself: every AMQP 0-9-1
 * and RabbitMQ type, `L` included. A tag it does not know either stops decoding there and is
 * reported under `x-dtest-undecodable`, so the message still reaches the worker, which
 * dead-letters it instead of losing the connection.
 */
// amqplib does not export its codec or ship types for it; the path import reaches the same
// module instance amqplib itself loads.
// @ts-expect-error: no declaration file for amqplib's internal codec module
import codecModule from "../node_modules/amqplib/lib/codec.js";

const codec = codecModule as { decodeFields: (slice: Buffer) => Record<string, unknown> };

export const UNDECODABLE_HEADER = "x-dtest-undecodable";

class UnknownTag extends Error {}

function readValue(buf: Buffer, at: number): [unknown, number] {
  const tag = String.fromCharCode(buf[at]!);
  const o = at + 1;
  switch (tag) {
    case "t":
      return [buf.readUInt8(o) !== 0, o + 1];
    case "b":
      return [buf.readInt8(o), o + 1];
    case "B":
      return [buf.readUInt8(o), o + 1];
    case "s":
    case "U":
      return [buf.readInt16BE(o), o + 2];
    case "u":
      return [buf.readUInt16BE(o), o + 2];
    case "I":
      return [buf.readInt32BE(o), o + 4];
    case "i":
      return [buf.readUInt32BE(o), o + 4];
    case "l":
      return [safeInteger(buf.readBigInt64BE(o)), o + 8];
    case "L":
      return [safeInteger(buf.readBigUInt64BE(o)), o + 8];
    case "T":
      return [safeInteger(buf.readBigUInt64BE(o)), o + 8];
    case "f":
      return [buf.readFloatBE(o), o + 4];
    case "d":
      return [buf.readDoubleBE(o), o + 8];
    case "D":
      return [buf.readUInt32BE(o + 1) / 10 ** buf.readUInt8(o), o + 5];
    case "S": {
      const len = buf.readUInt32BE(o);
      return [buf.toString("utf8", o + 4, o + 4 + len), o + 4 + len];
    }
    case "x": {
      const len = buf.readUInt32BE(o);
      return [Buffer.from(buf.subarray(o + 4, o + 4 + len)), o + 4 + len];
    }
    case "A": {
      const len = buf.readUInt32BE(o);
      return [readArray(buf.subarray(o + 4, o + 4 + len)), o + 4 + len];
    }
    case "F": {
      const len = buf.readUInt32BE(o);
      return [decodeTable(buf.subarray(o + 4, o + 4 + len)), o + 4 + len];
    }
    case "V":
      return [null, o];
    default:
      throw new UnknownTag(`unknown field type "${tag}" (byte ${buf[at]})`);
  }
}

/** Numbers beyond 2^53 would lose digits as JS numbers; they are kept as decimal strings. */
function safeInteger(n: bigint): number | string {
  return n <= BigInt(Number.MAX_SAFE_INTEGER) && n >= BigInt(Number.MIN_SAFE_INTEGER)
    ? Number(n)
    : n.toString();
}

function readArray(buf: Buffer): unknown[] {
  const values: unknown[] = [];
  for (let at = 0; at < buf.length;) {
    const [value, next] = readValue(buf, at);
    values.push(value);
    at = next;
  }
  return values;
}

/** Decodes an AMQP field table; stops at an unknown type and says so in UNDECODABLE_HEADER. */
export function decodeTable(buf: Buffer): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  let at = 0;
  while (at < buf.length) {
    const len = buf.readUInt8(at);
    const key = buf.toString("utf8", at + 1, at + 1 + len);
    try {
      const [value, next] = readValue(buf, at + 1 + len);
      fields[key] = value;
      at = next;
    } catch (err) {
      if (!(err instanceof UnknownTag) && !(err instanceof RangeError)) throw err;
      fields[UNDECODABLE_HEADER] = `field "${key}": ${err.message}`;
      break;
    }
  }
  return fields;
}

const original = codec.decodeFields;

codec.decodeFields = (slice: Buffer) => {
  try {
    return original(slice);
  } catch {
    // amqplib's decoder is the fast path; this one only runs for tables it cannot read.
    return decodeTable(slice);
  }
};
