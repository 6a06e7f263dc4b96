import { describe, expect, test } from "bun:test";

import amqp from "amqplib";

import { batchWrites, WriteBatcher, type FrameSink } from "./write-batching.ts";

const BROKER_URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";

/** A socket stand-in that records each write and can ask for a drain. */
function sink(): FrameSink & { writes: Buffer[]; writableNeedDrain: boolean } {
  return {
    writes: [],
    writableNeedDrain: false,
    write(chunk: Buffer) {
      this.writes.push(chunk);
      return !this.writableNeedDrain;
    },
    end() {},
  };
}

describe("WriteBatcher", () => {
  test("frames written in one turn reach the socket as one write, in order", async () => {
    const socket = sink();
    const batcher = new WriteBatcher(socket);
    for (const text of ["a", "bb", "ccc"]) batcher.write(Buffer.from(text));
    expect(socket.writes).toHaveLength(0);

    await Promise.resolve();
    expect(socket.writes.map(String)).toEqual(["abbccc"]);

    batcher.write(Buffer.from("d"));
    await Promise.resolve();
    expect(socket.writes.map(String)).toEqual(["abbccc", "d"]);
  });

  test("a large batch is written at once, without waiting for the turn to end", () => {
    const socket = sink();
    const batcher = new WriteBatcher(socket);
    const frame = Buffer.alloc(64 * 1024, 1);
    for (let i = 0; i < 4; i++) batcher.write(frame);
    expect(socket.writes).toHaveLength(1);
    expect(socket.writes[0]!.length).toBe(4 * frame.length);
  });

  test("reports a full socket, so amqplib waits for drain", async () => {
    const socket = sink();
    const batcher = new WriteBatcher(socket);
    socket.writableNeedDrain = true;
    expect(batcher.write(Buffer.from("x"))).toBe(false);
    socket.writableNeedDrain = false;
    expect(batcher.write(Buffer.from("y"))).toBe(true);
  });
});

describe("batchWrites on a real amqplib connection", () => {
  test("takes over the connection's writes, and messages still round-trip", async () => {
    const model = await amqp.connect(BROKER_URL);
    try {
      expect(batchWrites(model.connection)).toBe(true);

      const ch = await model.createConfirmChannel();
      const { queue } = await ch.assertQueue("", { exclusive: true });
      for (let i = 0; i < 50; i++) ch.sendToQueue(queue, Buffer.from(String(i)));
      await ch.waitForConfirms();

      const got: string[] = [];
      let msg;
      while ((msg = await ch.get(queue, { noAck: true }))) got.push(msg.content.toString());
      expect(got).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
    } finally {
      await model.close();
    }
  });

  test("leaves a connection of another shape alone", () => {
    expect(batchWrites({})).toBe(false);
    expect(batchWrites({ stream: sink(), muxer: { out: sink() } })).toBe(false);
  });
});
