// Drives the unmodified npm `nist-randomness-beacon` client against a base URL.
//
//   node nist_client.js NODE_MODULES_PARENT BASE_URL CALLS_JSON
//
// The package has no option for its base URL, so this loads its index.js with one
// change only: the BEACON_V2_API_URI_BASE constant. CALLS_JSON is a list of
// [functionName, ...args]; prints one JSON list: per call, the pulse it resolved
// with (the client resolves only after its own signature and outputValue checks)
// or the error it rejected with.
'use strict'
const fs = require('fs')
const path = require('path')
const Module = require('module')

const [installDir, base, callsJson] = process.argv.slice(2)
const file = require.resolve('nist-randomness-beacon', { paths: [installDir] })
const CONSTANT = "const BEACON_V2_API_URI_BASE = 'https://beacon.nist.gov/beacon/2.0/'"
let source = fs.readFileSync(file, 'utf8')
if (!source.includes(CONSTANT)) {
  console.error(`nist_client.js: ${file} has no line ${CONSTANT}`)
  process.exit(2)
}
source = source.replace(CONSTANT, `const BEACON_V2_API_URI_BASE = ${JSON.stringify(base)}`)
const loaded = new Module(file, module)
loaded.filename = file
loaded.paths = Module._nodeModulePaths(path.dirname(file))
loaded._compile(source, file)
const beacon = loaded.exports

async function main() {
  const results = []
  for (const [name, ...args] of JSON.parse(callsJson)) {
    try {
      const body = await beacon[name](...args)
      const p = body.pulse
      results.push({ call: name, args, ok: true, chain: p.chainIndex, pulse: p.pulseIndex })
    } catch (err) {
      results.push({ call: name, args, ok: false, error: String((err && err.message) || err) })
    }
  }
  console.log(JSON.stringify(results))
}

main()
