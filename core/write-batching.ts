/**
 * One socket write per turn of the event loop instead of one per frame.
 *
 * amqplib hands every encoded frame (a whole message when it is small, an ack, a confirm
 * select) to the socket on its own. Under load that is a system call and a TCP segment per
 * frame on both ends, and on loopback RabbitMQ spends more CPU reading those segments than
 * routing the messages in them. Frames queued in the same turn are written together here,
 * once the turn's synchronous work is done; their order is kept, and so is amqplib's
 * back-pressure: a write reports "full" while the socket asks to be drained.
 */

/** What the batcher needs of a socket: the parts of a Node stream amqplib uses too. */
export interface FrameSink {
  write(chunk: Buffer): boolean;
  end(...args: unknown[]): unknown;
  readonly writableNeedDrain?: boolean;
}

/** A batch this large is written at once rather than at the end of the turn. */
const FLUSH_BYTES = 256 * 1024;

export class WriteBatcher {
  private pending: Buffer[] = [];
  private bytes = 0;
  private scheduled = false;

  constructor(private readonly sink: FrameSink) {}

  write(chunk: Buffer): boolean {
    this.pending.push(chunk);
    this.bytes += chunk.length;
    if (this.bytes >= FLUSH_BYTES) return this.flush();

    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(() => this.flush());
    }
    return this.sink.writableNeedDrain !== true;
  }

  /** Writes what is queued; returns false when the socket wants a drain before more. */
  flush(): boolean {
    this.scheduled = false;
    if (this.pending.length === 0) return this.sink.writableNeedDrain !== true;

    const chunk =
      this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.bytes);
    this.pending = [];
    this.bytes = 0;
    return this.sink.write(chunk);
  }
}

/** The amqplib internals batching replaces: its connection's frame multiplexer and stream. */
interface AmqplibConnection {
  stream?: FrameSink;
  muxer?: { out?: FrameSink };
}

/**
 * Puts a WriteBatcher between an amqplib connection's multiplexer and its socket. Returns
 * false, changing nothing, when the connection is not shaped as expected (another amqplib
 * version): frames then go out one by one, as before.
 */
export function batchWrites(connection: unknown): boolean {
  const conn = connection as AmqplibConnection;
  const stream = conn.stream;
  const muxer = conn.muxer;
  if (!stream || !muxer || muxer.out !== stream || typeof stream.end !== "function") return false;

  const batcher = new WriteBatcher(stream);
  muxer.out = batcher as unknown as FrameSink;

  // amqplib ends the stream straight after its last frames (close-ok); send them first.
  const end = stream.end.bind(stream);
  (stream as { end: FrameSink["end"] }).end = (...args: unknown[]) => {
    batcher.flush();
    return end(...args);
  };
  return true;
}
