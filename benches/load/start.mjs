// Starts a command (gleipnir serve, from benches/load/run) and measures its time to ready:
// from just before the process is spawned until GET <readyz-url> answers 200, polled
// every 1 ms. The command keeps running after this script exits.
//
// usage: node start.mjs <readyz-url> <stdout-file> <stderr-file> <command> [args...]
//
// Prints one line "<pid> <ready-ms>" on success. Exits 1 if the process exits or is not
// ready within 10 s.
import { spawn } from 'node:child_process'
import { openSync } from 'node:fs'
import { request } from 'node:http'

const [readyz, outFile, logFile, command, ...args] = process.argv.slice(2)
if (!readyz || !outFile || !logFile || !command) {
  console.error('usage: node start.mjs <readyz-url> <stdout-file> <stderr-file> <command> [args...]')
  process.exit(2)
}
const out = openSync(outFile, 'a')
const log = openSync(logFile, 'a')

const probe = () =>
  new Promise((resolve) => {
    const req = request(readyz, { agent: false }, (res) => {
      res.resume()
      resolve(res.statusCode === 200)
    })
    req.on('error', () => resolve(false))
    req.end()
  })
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const start = process.hrtime.bigint()
const child = spawn(command, args, { stdio: ['ignore', out, log], detached: true })
let exited = null
child.on('exit', (code, signal) => { exited = signal ?? code })
for (;;) {
  if (exited !== null) {
    console.error(`start.mjs: ${command} exited (${exited}) before it was ready; see ${logFile}`)
    process.exit(1)
  }
  if (await probe()) break
  if (process.hrtime.bigint() - start > 10_000_000_000n) {
    console.error(`start.mjs: ${command} not ready within 10 s; see ${logFile}`)
    child.kill()
    process.exit(1)
  }
  await sleep(1)
}
const readyMs = Number(process.hrtime.bigint() - start) / 1e6
child.unref()
console.log(`${child.pid} ${readyMs.toFixed(1)}`)
process.exit(0)
