/**
 * The plain-YAML fast path against the YAML library: what it reads must equal the library's
 * reading, and what it is not sure of it must leave to the library.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseDocument } from "yaml";

import { parseConfig } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { readPlainYaml } from "./plain-yaml.ts";

const SEED_CONFIG = readFileSync(join(import.meta.dir, "..", "test-config.yml"), "utf8");

/** Texts the fast path reads, each as the YAML library reads it. */
const PLAIN = [
  SEED_CONFIG,
  "a: 1\nb: -2.50\nc: 0\nd: -0\ne: 123456789012345\n",
  "a: true\nb: False\nc: NULL\nd: null\ne:\nf: yes\ng: off\nh: Y\n",
  'a: "quoted: # not a comment"\nb: \'it\'\'s\'\nc: "tab\\tnew\\nline \\"q\\" \\\\ \\/"\n',
  "url: amqp://guest:guest@rabbit:5672/ci\npath: /srv/app\nvar: $HOME\nsum: a+b=c, d\n",
  "a: value # comment\n# a whole-line comment\n  # an indented one\nb: x#y\n",
  'list:\n  - one\n  - 2\n  - "three"\nsame_column:\n- a\n- b\nafter: 1\n',
  "tasks:\n  - task: unit\n    count: 3\n    args: [\"-k\", smoke, 7, true, 'x, y']\n  - ping\n",
  "items:\n-   key: 1\n    other: [ ]\n- k: [a b, c]\n  l:\n  - x\n",
  "  indented:\n    deeper: 1\n  back: 2\n",
  "a:\n  b:\n    c:\n      d: deep\n  e: []\n",
  'emoji: "héllo 🚀"\nplain: naïve café\n',
  "a: x]y\nb: c{d}\nc: e\"f'g\n",
];

/** Texts the fast path leaves to the YAML library, and why. */
const NOT_PLAIN: [string, string][] = [
  ["anchor and alias", "a: &x 1\nb: *x\n"],
  ["tag", "a: !!str 5\n"],
  ["block scalar", "a: |\n  text\n"],
  ["folded scalar", "a: >-\n  text\n"],
  ["flow mapping", "a: {b: 1}\n"],
  ["nested flow list", "a: [[1]]\n"],
  ["multi-line plain scalar", "a: one\n  two\n"],
  ["duplicate key", "a: 1\na: 2\n"],
  ["tab", "a:\n\tb: 1\n"],
  ["carriage return", "a: 1\r\nb: 2\r\n"],
  ["byte order mark", "\ufeffa: 1\n"],
  ["non-breaking space", "a:\u00a0b\n"],
  ["hex number", "a: 0x1F\n"],
  ["octal number", "a: 0o17\n"],
  ["leading zero", "a: 007\n"],
  ["exponent", "a: 1e3\n"],
  ["plus sign", "a: +12\n"],
  ["infinity", "a: .inf\n"],
  ["underscores", "a: 1_000\n"],
  ["tilde null", "a: ~\n"],
  ["quoted key", '"a b": 1\n'],
  ["key with a space before the colon", "a : 1\n"],
  ["null key", "null: 1\n"],
  ["__proto__ key", "__proto__: 1\n"],
  ["merge key", "<<: {a: 1}\n"],
  ["unicode escape", 'a: "\\u00e9"\n'],
  ["unclosed quote", 'a: "open\n'],
  ["text after a quote", 'a: "x" y\n'],
  ["trailing comma", "a: [1, 2,]\n"],
  ["empty item", "a:\n  -\n  - x\n"],
  ["inline nested list", "a:\n  - - x\n"],
  ["document marker", "---\na: 1\n"],
  ["second document", "a: 1\n---\nb: 2\n"],
  ["directive", "%YAML 1.2\n---\na: 1\n"],
  ["top-level list", "- a\n- b\n"],
  ["top-level scalar", "just text\n"],
  ["empty text", ""],
  ["bad indentation", "a:\n    b: 1\n  c: 2\n"],
  ["value starting with an indicator", "a: @x\n"],
  ["colon at the end of a value", "a: b:\n"],
  ["nesting deeper than the fast path goes", deepMapping(40)],
];

function deepMapping(levels: number): string {
  return Array.from({ length: levels }, (_, i) => `${" ".repeat(i)}k${i}:`).join("\n") + " 1\n";
}

describe("the plain-YAML fast path", () => {
  test.each(PLAIN.map((text) => [JSON.stringify(text).slice(0, 60), text]))(
    "reads %s as the YAML library does",
    (_name, text) => {
      const doc = parseDocument(text, { uniqueKeys: true });
      expect(doc.errors).toEqual([]);
      expect(doc.warnings).toEqual([]);

      const plain = readPlainYaml(text);
      expect(plain).toBeDefined();
      expect(Bun.deepEquals(plain, doc.toJS(), true)).toBe(true);
    },
  );

  test.each(NOT_PLAIN)("leaves a %s to the YAML library", (_name, text) => {
    expect(readPlainYaml(text)).toBeUndefined();
  });

  test("a text larger than a config is left to the YAML library", () => {
    const big = Array.from({ length: 5000 }, (_, i) => `key_${i}: value number ${i}`).join("\n");
    expect(big.length).toBeGreaterThan(64 * 1024);
    expect(readPlainYaml(big)).toBeUndefined();
  });
});

describe("configs read by the fast path", () => {
  test("give the same config as the full parse", () => {
    const fast = parseConfig(SEED_CONFIG, "seed.yml");
    // An anchor, which the fast path leaves alone, sends the same content the long way.
    const full = parseConfig(SEED_CONFIG.replace("workers: 2", "workers: &w 2"), "seed.yml");
    expect(fast).toEqual(full);
  });

  test("still name the line of a problem", () => {
    const text = SEED_CONFIG.replace("port: 5672", 'port: "five"');
    expect(readPlainYaml(text)).toBeDefined();

    const error = (() => {
      try {
        parseConfig(text, "bad.yml");
      } catch (err) {
        return err;
      }
    })();
    expect(error).toBeInstanceOf(ConfigError);
    const line = text.split("\n").findIndex((l) => l.includes("port:")) + 1;
    expect((error as ConfigError).problems).toEqual([
      expect.stringMatching(new RegExp(`^bad\\.yml:${line}: rabbitmq\\.port `)),
    ]);
  });

  test("still name the line of a warning", () => {
    const text = `${SEED_CONFIG}colour: blue\n`;
    expect(readPlainYaml(text)).toBeDefined();

    const { warnings } = parseConfig(text, "odd.yml");
    const line = text.split("\n").indexOf("colour: blue") + 1;
    expect(warnings).toEqual([expect.stringMatching(new RegExp(`^odd\\.yml:${line}: colour `))]);
  });
});
