// Runs firmware tests or any script under real MicroPython (the WebAssembly port) in Node.js.
//
//   node tests/mpy/run.mjs tests [test_foo ...]           every tests/firmware/**/test_*.py (or those named)
//   node tests/mpy/run.mjs script FILE.py [ARG ...]        one script; its stdout is passed through
//   option --heapsize=BYTES (before the mode): initial MicroPython heap (default 1 MiB; it grows)
//
// The wasm filesystem mirrors the repository, cwd "/":
//   /lib/polylink/      <- firmware/polylink/   (so `import polylink.proto` works; /lib is on sys.path)
//   /tests/firmware/    <- tests/firmware/      (also on sys.path, for `_check`)
//   /tests/vectors/     <- tests/vectors/
//   /boards/            <- boards/
//   /lib/polylink_host/ <- firmware/host/       (esp32sim.py: the esp32.Partition simulation)
//   /lib/cryptolib.py   <- tests/mpy/cryptolib.py (pure-Python AES: the wasm build lacks cryptolib)
// Exit status: 0 all passed / script ran; 1 a test failed / script raised; 2 the runner itself broke.

import fs from "node:fs";
import path from "node:path";
import url from "node:url";

const HERE = path.dirname(url.fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const PKG = path.join(HERE, "node_modules", "@micropython", "micropython-webassembly-pyscript",
  "micropython.mjs");

const MOUNTS = [
  ["firmware/polylink", "/lib/polylink"],
  ["tests/firmware", "/tests/firmware"],
  ["tests/vectors", "/tests/vectors"],
  ["boards", "/boards"],
  // The host port's esp32.Partition simulation (MicroPython subset) for the runtime OTA tests.
  ["firmware/host", "/lib/polylink_host"],
];

function usage(msg) {
  process.stderr.write(`run.mjs: ${msg}\n` +
    "usage: node tests/mpy/run.mjs [--heapsize=BYTES] tests [test_module ...]\n" +
    "       node tests/mpy/run.mjs [--heapsize=BYTES] script FILE.py [ARG ...]\n");
  process.exit(2);
}

function copyTree(mp, src, dst) {
  if (!fs.existsSync(src)) return;
  mp.FS.mkdirTree(dst);
  for (const entry of fs.readdirSync(src, { withFileTypes: true })) {
    if (entry.name === "__pycache__" || entry.name.endsWith(".pyc")) continue;
    const s = path.join(src, entry.name);
    const d = `${dst}/${entry.name}`;
    if (entry.isDirectory()) copyTree(mp, s, d);
    else if (entry.isFile()) mp.FS.writeFile(d, fs.readFileSync(s));
  }
}

// Python string literal for a JS string (JSON string syntax is valid Python for these inputs).
const pyStr = (s) => JSON.stringify(String(s));

async function main() {
  const args = process.argv.slice(2);
  let heapsize = 1024 * 1024;
  while (args.length && args[0].startsWith("--")) {
    const opt = args.shift();
    const m = /^--heapsize=(\d+)$/.exec(opt);
    if (!m) usage(`unknown option ${opt}`);
    heapsize = Number(m[1]);
  }
  const mode = args.shift();
  if (mode !== "tests" && mode !== "script") usage("mode must be 'tests' or 'script'");
  if (!fs.existsSync(PKG)) {
    process.stderr.write("run.mjs: MicroPython wasm package missing; run: npm ci --prefix tests/mpy\n");
    process.exit(2);
  }
  const { loadMicroPython } = await import(url.pathToFileURL(PKG).href);

  // Our own byte buffer: the package's line buffer would drop a last line without newline.
  let pending = [];
  const flush = () => {
    if (pending.length) process.stdout.write(Buffer.from(pending));
    pending = [];
  };
  const mp = await loadMicroPython({
    heapsize,
    linebuffer: false,
    stdout: (bytes) => {
      for (const b of bytes) pending.push(b);
      if (bytes.includes(10)) flush();
    },
    stderr: (bytes) => process.stderr.write(Buffer.from(bytes)),
  });
  for (const [src, dst] of MOUNTS) copyTree(mp, path.join(ROOT, src), dst);
  // This wasm build has no cryptolib (the ESP32 build has); the tests' stand-in takes its place.
  const standIn = path.join(HERE, "cryptolib.py");
  if (fs.existsSync(standIn)) mp.FS.writeFile("/lib/cryptolib.py", fs.readFileSync(standIn));

  // The pyscript variant's asyncio runs on the JS event loop and has no run(); this is the same
  // stand-in the package's own CLI installs: a top-level await of the task.
  const asyncio = mp.pyimport("asyncio");
  asyncio.run = async (coro) => await asyncio.create_task(coro);

  let prelude = "import sys\nsys.path.insert(0, '/tests/firmware')\nsys.path.insert(0, '/lib')\n";
  let code;
  if (mode === "tests") {
    const selected = args.map((a) => path.basename(a).replace(/\.py$/, ""));
    code = prelude + fs.readFileSync(path.join(HERE, "runner.py"), "utf8") +
      `\nawait _run(${JSON.stringify(selected)})\n`;
  } else {
    const file = args.shift();
    if (!file) usage("script mode needs a FILE.py");
    const argv = [file, ...args].map(pyStr).join(", ");
    prelude += `sys.argv[:] = [${argv}]\n`;
    code = prelude + fs.readFileSync(file, "utf8");
  }

  let status = 0;
  try {
    await mp.runPythonAsync(code);
    if (mode === "tests") status = mp.globals.get("FAILED") ? 1 : 0;
  } catch (err) {
    flush();
    if (err && err.name === "PythonError") {
      if (err.type === "SystemExit") status = 0;
      else {
        process.stderr.write(String(err.message) + "\n");
        status = mode === "tests" ? 2 : 1;
      }
    } else {
      process.stderr.write(`run.mjs: ${err && err.stack ? err.stack : err}\n`);
      status = 2;
    }
  }
  flush();
  process.exitCode = status;
}

await main();
