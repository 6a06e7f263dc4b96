/**
 * A reader for the plain subset of YAML that configs are nearly always written in: block
 * mappings and lists, one value per line, quoted or plain scalars and one-line flow lists.
 *
 * It exists for start-up time. The full YAML library spends several milliseconds composing
 * even a short file, which is most of what a one-task dispatch costs before it connects.
 * Anything outside the subset, or anything the subset could read differently from YAML 1.2
 * (tabs, anchors, tags, block scalars, multi-line values, odd numbers, duplicate keys), makes
 * readPlainYaml return undefined, and the caller falls back to the full library. It never
 * reports errors: where a file is wrong, the full library is the one that explains why.
 */

/** Texts longer than this go to the full library; a config is a page or two. */
const MAX_TEXT = 64 * 1024;

/** Deeper nesting goes to the full library, which refuses what is too deep. */
const MAX_DEPTH = 32;

/** A mapping key: a name, as configs write them, followed by a colon and a space or the end. */
const KEY_LINE = /^([A-Za-z_][A-Za-z0-9_.\-/]*):(?: +(.*))?$/;

/** Keys YAML would read as something other than their text. */
const SPECIAL_KEY = /^(?:null|Null|NULL|true|True|TRUE|false|False|FALSE|__proto__)$/;

/**
 * Tabs, carriage returns, control characters and the spaces and line breaks beyond ASCII, whose
 * meaning differs between YAML versions; a file holding any of them goes to the full library.
 */
const UNUSUAL =
  /[\x00-\x09\x0b-\x1f\x7f-\x9f\u00a0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]/;

/** A whole-line comment or a blank line. */
const SKIP = /^ *(?:#.*)?$/;

/** A line's trailing comment: YAML needs a space before the #. */
const TAIL = /^(?: +#.*| *)$/;

/** Plain scalars read as numbers: no exponent, underscores, signs but minus, or leading dots. */
const NUMBER = /^-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,15})?$/;

/** A plain scalar read as text starts with a letter or one of _ / $, never an indicator. */
const WORD_START = "[A-Za-z_/$]";

/** In a block, text may hold anything but `: ` or a trailing colon, so URLs such as a:b read. */
const BLOCK_WORD = new RegExp(`^${WORD_START}(?:[^:]|:(?! |$))*$`);

/** In a flow list, commas, brackets and colons belong to the list. */
const FLOW_WORD = new RegExp(`^${WORD_START}[^:,[\\]{}]*$`);

/** Words that YAML 1.2 reads as null or booleans. */
const RESERVED = new Map<string, unknown>([
  ["null", null],
  ["Null", null],
  ["NULL", null],
  ["true", true],
  ["True", true],
  ["TRUE", true],
  ["false", false],
  ["False", false],
  ["FALSE", false],
]);

/** Double-quoted text with only the escapes a config needs. */
const DOUBLE_QUOTED = /^"((?:[^"\\\x00-\x1f]|\\["\\/nt])*)"/;
const ESCAPES: Record<string, string> = { n: "\n", t: "\t", "/": "/", '"': '"', "\\": "\\" };
const SINGLE_QUOTED = /^'((?:[^'\x00-\x1f]|'')*)'/;

/** Thrown inside the reader when the text leaves the subset; never escapes readPlainYaml. */
const OUTSIDE = Symbol("outside the plain subset");

interface Line {
  indent: number;
  item: boolean;
  text: string;
  /** For a list item, the column its text starts at. */
  column: number;
}

/** The value the text stands for, or undefined when it is not plain YAML this reader is sure of. */
export function readPlainYaml(text: string): Record<string, unknown> | undefined {
  if (text.length > MAX_TEXT || UNUSUAL.test(text)) return undefined;

  try {
    const lines = splitLines(text);
    if (lines.length === 0 || lines[0]!.item) return undefined;

    const reader = new Reader(lines);
    const value = reader.map(lines[0]!.indent, 0);
    return reader.done() ? value : undefined;
  } catch (err) {
    if (err === OUTSIDE) return undefined;
    throw err;
  }
}

function splitLines(text: string): Line[] {
  const lines: Line[] = [];

  for (const raw of text.split("\n")) {
    if (SKIP.test(raw)) continue;

    const indent = raw.length - raw.trimStart().length;
    const body = raw.slice(indent);
    if (body.startsWith("- ")) lines.push(itemLine(indent, body));
    else lines.push({ indent, item: false, text: body, column: indent });
  }
  return lines;
}

/** `- value` as a list item; a mapping in it lines its keys up with the value's column. */
function itemLine(indent: number, body: string): Line {
  const text = body.slice(2).trimStart();
  return { indent, item: true, text, column: indent + body.length - text.length };
}

class Reader {
  private next = 0;

  constructor(private readonly lines: Line[]) {}

  done(): boolean {
    return this.next === this.lines.length;
  }

  private peek(): Line | undefined {
    return this.lines[this.next];
  }

  map(indent: number, depth: number): Record<string, unknown> {
    if (depth > MAX_DEPTH) throw OUTSIDE;
    const map: Record<string, unknown> = {};

    for (let line = this.peek(); line?.indent === indent && !line.item; line = this.peek()) {
      const match = KEY_LINE.exec(line.text);
      if (!match) throw OUTSIDE;

      const key = match[1]!;
      if (SPECIAL_KEY.test(key) || Object.hasOwn(map, key)) throw OUTSIDE;
      this.next++;

      const rest = match[2] ?? "";
      map[key] = TAIL.test(rest) ? this.nested(indent, depth) : this.scalarLine(rest, indent);
    }
    return map;
  }

  /** What follows `key:` with nothing after it: a deeper block, a list at the same column, null. */
  private nested(indent: number, depth: number): unknown {
    const line = this.peek();
    if (line === undefined || line.indent < indent) return null;
    if (line.indent === indent) return line.item ? this.list(indent, depth + 1) : null;
    return line.item ? this.list(line.indent, depth + 1) : this.map(line.indent, depth + 1);
  }

  private list(indent: number, depth: number): unknown[] {
    if (depth > MAX_DEPTH) throw OUTSIDE;
    const list: unknown[] = [];

    for (let line = this.peek(); line?.indent === indent && line.item; line = this.peek()) {
      if (line.text === "" || line.text.startsWith("#")) throw OUTSIDE;

      // `- key: value` opens a mapping whose keys line up with this first one.
      if (KEY_LINE.test(line.text)) {
        this.lines[this.next] = { ...line, indent: line.column, item: false };
        list.push(this.map(line.column, depth + 1));
      } else {
        this.next++;
        list.push(this.scalarLine(line.text, indent));
      }
    }
    return list;
  }

  /** A scalar that ends its line; a deeper line after it would continue it, so it must not. */
  private scalarLine(text: string, indent: number): unknown {
    const following = this.peek();
    if (following !== undefined && following.indent > indent) throw OUTSIDE;
    return scalar(text);
  }
}

/** One value written on one line, with any trailing comment. */
function scalar(text: string): unknown {
  if (text[0] === "[") return flowList(text);

  const quoted = quotedScalar(text);
  if (quoted) {
    if (!TAIL.test(text.slice(quoted.length))) throw OUTSIDE;
    return quoted.value;
  }

  const hash = text.indexOf(" #");
  const plain = (hash === -1 ? text : text.slice(0, hash)).trimEnd();
  return plainScalar(plain, BLOCK_WORD);
}

/** A quoted scalar at the start of the text, and how many characters it takes up. */
function quotedScalar(text: string): { value: string; length: number } | undefined {
  if (text[0] === '"') {
    const match = DOUBLE_QUOTED.exec(text);
    if (!match) throw OUTSIDE;
    const value = match[1]!.replace(/\\(.)/g, (_all, c: string) => ESCAPES[c]!);
    return { value, length: match[0].length };
  }
  if (text[0] === "'") {
    const match = SINGLE_QUOTED.exec(text);
    if (!match) throw OUTSIDE;
    return { value: match[1]!.replaceAll("''", "'"), length: match[0].length };
  }
  return undefined;
}

function plainScalar(plain: string, word: RegExp): unknown {
  if (NUMBER.test(plain)) return Number(plain);
  if (RESERVED.has(plain)) return RESERVED.get(plain);
  if (!word.test(plain)) throw OUTSIDE;
  return plain;
}

/** `[a, "b c", 3]` on one line: scalars only, no nesting. */
function flowList(text: string): unknown[] {
  const items: unknown[] = [];
  let rest = text.slice(1).trimStart();

  while (rest[0] !== "]") {
    const quoted = quotedScalar(rest);
    const item = quoted ? rest.slice(0, quoted.length) : /^[^,\]]*/.exec(rest)![0];
    items.push(quoted ? quoted.value : plainScalar(item.trimEnd(), FLOW_WORD));

    rest = rest.slice(item.length).trimStart();
    if (rest[0] === "]") break;
    // A trailing comma, `[a, ]`, is left to the full library too.
    if (rest[0] !== ",") throw OUTSIDE;
    rest = rest.slice(1).trimStart();
    if (rest[0] === "]") throw OUTSIDE;
  }

  if (!TAIL.test(rest.slice(1))) throw OUTSIDE;
  return items;
}
