// Runs deploy/edge/nist-time.mjs's handler under node against real origins.
//
//   node edge_check.mjs BUCKET_ORIGIN GATEWAY_ORIGIN PERIOD_MS PATHS_JSON
//
// Prints one JSON list: per path, the status, the pulse index answered (null when
// none) and which origin answered ("edge": the bucket's exact object; "gateway").
import { handle } from '../../deploy/edge/nist-time.mjs'

const [bucket, gateway, period, pathsJson] = process.argv.slice(2)
const env = { BUCKET_ORIGIN: bucket, GATEWAY_ORIGIN: gateway, PERIOD_MS: period }
const results = []
for (const path of JSON.parse(pathsJson)) {
  const answer = await handle(new Request(`http://edge.test${path}`), env)
  const text = await answer.text()
  let pulse = null
  if (answer.status === 200) pulse = JSON.parse(text).pulse.pulseIndex
  results.push({
    path,
    status: answer.status,
    pulse,
    via: answer.headers.get('X-Beacon-Answered-By'),
    cache: answer.headers.get('Cache-Control')
  })
}
console.log(JSON.stringify(results))
