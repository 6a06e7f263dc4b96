/**
 * Throwaway certificates for the TLS tests, made with the openssl command line: a CA, a server
 * certificate for localhost and 127.0.0.1 signed by it, and a second CA that signed nothing.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const OPENSSL_CONFIG = join(import.meta.dir, "openssl.cnf");

export interface Certificates {
  /** PEM of the CA that signed the broker's certificate. */
  ca: string;
  /** PEM of a CA that signed nothing here, for the "wrong CA" case. */
  otherCa: string;
  cert: string;
  key: string;
}

/** Fails with one line naming the missing tool and how to install it. */
export function requireOpenssl(): string {
  const openssl = Bun.which("openssl");
  if (!openssl) {
    throw new Error("openssl is not installed; the TLS tests need it (apt-get install openssl)");
  }
  return openssl;
}

// P-256: a key takes milliseconds to make, and both Erlang's ssl and Bun accept it.
const NEW_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** Writes the keys and certificates under `dir`; throws with openssl's message on failure. */
export async function makeCertificates(dir: string): Promise<Certificates> {
  const openssl = requireOpenssl();
  mkdirSync(dir, { recursive: true });
  const [ca, otherCa, server] = ["ca", "other-ca", "server"].map((name) => join(dir, name));

  await makeCa(openssl, ca!, "dtest test CA");
  await makeCa(openssl, otherCa!, "dtest unrelated CA");

  const request = ["-config", OPENSSL_CONFIG, ...NEW_KEY, "-keyout", `${server}.key`];
  const subject = ["-subj", "/CN=localhost", "-out", `${server}.csr`];
  await runOpenssl(openssl, ["req", "-new", ...request, ...subject]);

  const issuer = ["-CA", `${ca}.pem`, "-CAkey", `${ca}.key`, "-set_serial", randomSerial()];
  const extensions = ["-extfile", OPENSSL_CONFIG, "-extensions", "server_ext", "-days", "1"];
  const files = ["-in", `${server}.csr`, "-out", `${server}.pem`];
  await runOpenssl(openssl, ["x509", "-req", ...issuer, ...extensions, ...files]);

  return {
    ca: `${ca}.pem`,
    otherCa: `${otherCa}.pem`,
    cert: `${server}.pem`,
    key: `${server}.key`,
  };
}

async function makeCa(openssl: string, base: string, name: string): Promise<void> {
  const key = [...NEW_KEY, "-keyout", `${base}.key`, "-subj", `/CN=${name}`, "-days", "1"];
  const cert = ["-config", OPENSSL_CONFIG, "-extensions", "ca_ext", "-out", `${base}.pem`];
  await runOpenssl(openssl, ["req", "-x509", ...key, ...cert]);
}

/** A positive 64-bit serial; `x509 -req` needs one, and a random one never repeats across runs. */
function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  bytes[0] = bytes[0]! & 0x7f;
  return `0x${Buffer.from(bytes).toString("hex")}`;
}

async function runOpenssl(openssl: string, args: string[]): Promise<void> {
  const child = Bun.spawn([openssl, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [code, stderr] = await Promise.all([child.exited, new Response(child.stderr).text()]);

  if (code !== 0) {
    const why = stderr.trim().split("\n").pop();
    throw new Error(`openssl ${args[0]} exited with ${code}: ${why}`);
  }
}
