// Compile QbusAnchor.sol offline with the pinned solc-js (tools/chain) and print the
// artifact JSON (ABI + bytecode) on stdout. scripts/compile_contract.sh writes it to
// QbusAnchor.json; tests/test_chain_contract.py recompiles and compares byte for byte.
// Imports that are not relative ("@openzeppelin/contracts/…") resolve in tools/chain's
// node_modules, where package-lock.json pins their version.
//
//   node qbus/verifier/contracts/compile.mjs [--solc-dir tools/chain]
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const at = args.indexOf("--solc-dir");
const toolsDir = resolve(at >= 0 ? args[at + 1] : join(here, "..", "..", "..", "tools", "chain"));
const require = createRequire(join(toolsDir, "package.json"));
const solc = require("solc");
const modulesDir = join(toolsDir, "node_modules");

const NAME = "QbusAnchor";
const FILE = `${NAME}.sol`;
const source = readFileSync(join(here, FILE), "utf8");
// Settings are part of the artifact: the same source, compiler and settings give the
// same bytes (the metadata hash appended to the bytecode covers all three).
const settings = {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};
const input = { language: "Solidity", sources: { [FILE]: { content: source } }, settings };

// solc asks for each imported source unit by its import path. The unit name (not the
// file's place on this disk) goes into the metadata hash, so the bytes do not depend on
// where the checkout lives.
function findImports(unit) {
    const file = join(modulesDir, unit);
    if (unit.startsWith(".") || !existsSync(file)) {
        return { error: `${unit} not found in ${modulesDir} (run npm ci --prefix tools/chain)` };
    }
    return { contents: readFileSync(file, "utf8") };
}

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) process.stderr.write(`${e.formattedMessage}\n`);
if (errors.length) process.exit(1);
const contract = output.contracts[FILE][NAME];
const artifact = {
    contractName: NAME,
    sourceName: FILE,
    compiler: { name: "solc-js", version: solc.version(), settings: { ...settings, outputSelection: undefined } },
    dependencies: { "@openzeppelin/contracts": require("@openzeppelin/contracts/package.json").version },
    abi: contract.abi,
    bytecode: `0x${contract.evm.bytecode.object}`,
    deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
};
process.stdout.write(`${JSON.stringify(artifact, null, 2)}\n`);
