/**
 * Celery's canvas as a worker must carry it on: when a task succeeds, the next step of its
 * chain and its link callbacks become new task messages; when it fails for good, the chain's
 * remaining steps are failed too, as Celery marks them, so a client waiting on the last step
 * gets the error instead of waiting forever. Chords are refused (see runtime.ts).
 */
import { findRoute, type DtestConfig } from "./config.ts";
import { newTask, type Signature, type TaskMessage } from "./protocol.ts";

export interface FollowUp {
  task: TaskMessage;
  /** Where to publish it; undefined when no route is known (the caller fails it). */
  queue: string | undefined;
}

function toTask(
  sig: Signature,
  parent: TaskMessage,
  result: unknown,
  chain: Signature[] | null,
): TaskMessage {
  const args = sig.immutable ? (sig.args ?? []) : [result, ...(sig.args ?? [])];
  return newTask({
    id: sig.options?.task_id,
    name: sig.task,
    args,
    kwargs: sig.kwargs ?? {},
    replyTo: sig.options?.reply_to ?? parent.replyTo,
    rootId: parent.rootId,
    parentId: parent.id,
    embed: { callbacks: sig.options?.link ?? null, errbacks: null, chain, chord: null },
  });
}

function queueFor(config: DtestConfig, sig: Signature): string | undefined {
  return findRoute(config, sig.task)?.queue ?? sig.options?.queue ?? sig.options?.routing_key;
}

/** The messages to publish after `task` succeeded with `result`. */
export function followUps(config: DtestConfig, task: TaskMessage, result: unknown): FollowUp[] {
  const out: FollowUp[] = [];
  const chain = task.embed.chain;
  if (chain && chain.length > 0) {
    const next = chain.at(-1)!;
    const rest = chain.length > 1 ? chain.slice(0, -1) : null;
    out.push({ task: toTask(next, task, result, rest), queue: queueFor(config, next) });
  }
  for (const callback of task.embed.callbacks ?? []) {
    out.push({ task: toTask(callback, task, result, null), queue: queueFor(config, callback) });
  }
  return out;
}

/** The chain steps that will never run because `task` failed: their ids and reply queues. */
export function abandonedSteps(task: TaskMessage): { id: string; replyTo: string }[] {
  return (task.embed.chain ?? [])
    .map((sig) => ({
      id: sig.options?.task_id ?? "",
      replyTo: sig.options?.reply_to ?? task.replyTo,
    }))
    .filter((step) => step.id !== "");
}
