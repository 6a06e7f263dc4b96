/**
 * The broker side of the bench: which RabbitMQ to use (loopback only), names unique to this
 * run, and removing every queue and exchange the run created, even after a failure.
 */
import amqp, { type ChannelModel } from "amqplib";

export const DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672";

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

/** AMQP_URL or the local default; refuses a remote broker, whose figures mean something else. */
export function brokerUrl(): string {
  const url = process.env.AMQP_URL || DEFAULT_URL;
  let host: string;
  try {
    host = new URL(url).hostname;
  } catch (cause) {
    const text = `AMQP_URL is not a URL (got "${mask(url)}"); unset it or use ${DEFAULT_URL}`;
    throw new Error(text, { cause });
  }
  if (!LOOPBACK.has(host)) {
    throw new Error(
      `the bench only runs against a broker on this machine (AMQP_URL points at ${host}); ` +
        `network latency would swamp what it measures, so unset AMQP_URL or use ${DEFAULT_URL}`,
    );
  }
  return url;
}

export function mask(url: string): string {
  return url.replace(/\/\/([^:/@]*):[^@]*@/, "//$1:***@");
}

/** A short random tag shared by every name of one run, so parallel runs never collide. */
export const RUN_ID = crypto.randomUUID().slice(0, 8);

/** `bench_<run>_<what>`: matches dtest's queue naming rules and is easy to spot in rabbitmqctl. */
export function runName(what: string): string {
  return `bench_${RUN_ID}_${what}`;
}

/** Connects or fails with one line that says how to start RabbitMQ. */
export async function connect(url: string): Promise<ChannelModel> {
  try {
    return await amqp.connect(url);
  } catch (err) {
    throw new Error(
      `RabbitMQ is not reachable at ${mask(url)} (${(err as Error).message}); ` +
        "start it with `rabbitmq-server -detached`",
    );
  }
}

/** Queues and exchanges a run created, removed at the end whatever happened. */
export class Leftovers {
  private readonly queues = new Set<string>();
  private readonly exchanges = new Set<string>();

  queue(...names: string[]): void {
    for (const name of names) this.queues.add(name);
  }

  exchange(...names: string[]): void {
    for (const name of names) this.exchanges.add(name);
  }

  /** Deletes everything recorded; a name already gone is fine. Returns what was deleted. */
  async clean(model: ChannelModel): Promise<string[]> {
    const deleted: string[] = [];
    for (const name of this.queues) {
      if (await deleteOne(model, (ch) => ch.deleteQueue(name))) deleted.push(name);
    }
    for (const name of this.exchanges) {
      if (await deleteOne(model, (ch) => ch.deleteExchange(name))) deleted.push(`exchange ${name}`);
    }
    this.queues.clear();
    this.exchanges.clear();
    return deleted;
  }
}

type AnyChannel = Awaited<ReturnType<ChannelModel["createChannel"]>>;

/** One channel per delete: a failed delete closes its channel, and must not stop the others. */
async function deleteOne(
  model: ChannelModel,
  op: (ch: AnyChannel) => Promise<unknown>,
): Promise<boolean> {
  const ch = await model.createChannel();
  ch.on("error", () => {
    // The same failure rejects `op` below, where it is reported.
  });
  try {
    await op(ch);
    await ch.close();
    return true;
  } catch (err) {
    process.stderr.write(`bench: cleanup step failed: ${(err as Error).message}\n`);
    return false;
  }
}
