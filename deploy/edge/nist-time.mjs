// NIST time queries at the edge, for a beacon site in a bucket behind a CDN.
//
// A static bucket holds `beacon/2.0/pulse/time/{t}` only for each pulse's exact
// time. This fetch handler (the standard Fetch API: a Cloudflare Worker's
// `export default { fetch }`, Deno Deploy, or any runtime with `fetch`) answers
// NIST's three time queries from those objects when it can, and falls back to
// `beacon serve` when it cannot:
//
//   pulse/time/{t}           first pulse at or after t -> the boundary ceil(t / P) * P
//   pulse/time/next/{t}      first pulse after t       -> floor(t / P) * P + P
//   pulse/time/previous/{t}  last pulse before t       -> ceil(t / P) * P - P
//
// where P is the beacon's period. The beacon emits pulses only at multiples of its
// period, so no pulse lies strictly between t and that boundary: when the bucket
// holds a pulse there (and its period is P and its timeStamp that boundary), it is
// NIST's answer. Otherwise (a gap, a pulse not yet out, t outside the chain, a
// period that changed between chains) the query goes to the gateway, which reads
// the time index. Set PERIOD_MS to the period of every chain of the site; if the
// period ever changes, route every time query to the gateway instead.
//
// Environment: BUCKET_ORIGIN (the bucket site root, no trailing slash),
// GATEWAY_ORIGIN (a `beacon serve` root), PERIOD_MS. Other paths are not handled
// here: the CDN sends them to the bucket or the gateway (docs/gateway.md).

const TIME = /^\/beacon\/2\.0\/pulse\/time\/(?:(previous|next)\/)?([0-9]{1,16})$/
const IMMUTABLE = 'public, max-age=31536000, immutable'

/** The boundary whose pulse answers `kind` at `t` (BigInt ms), or null if none can. */
export function boundary(kind, t, period) {
  const floor = (t / period) * period
  const ceil = floor === t ? t : floor + period
  if (kind === 'next') return floor + period
  if (kind === 'previous') return ceil - period >= 0n ? ceil - period : null
  return ceil
}

function timeMs(stamp) {
  const ms = Date.parse(stamp)
  return Number.isFinite(ms) ? BigInt(ms) : null
}

/** Answer `request` if it is a NIST time query; null otherwise. `via` tells which origin answered. */
export async function handle(request, env, fetchImpl = globalThis.fetch) {
  const url = new URL(request.url)
  const match = TIME.exec(url.pathname)
  if (match === null) return null
  const kind = match[1] || 'at_or_after'
  const t = BigInt(match[2])
  const period = BigInt(env.PERIOD_MS)
  const at = boundary(kind, t, period)
  if (at !== null) {
    const exact = await fetchImpl(`${env.BUCKET_ORIGIN}/beacon/2.0/pulse/time/${at}`)
    if (exact.status === 200) {
      const body = await exact.text()
      let pulse = null
      try {
        pulse = JSON.parse(body).pulse
      } catch {
        pulse = null
      }
      if (pulse && timeMs(pulse.timeStamp) === at && BigInt(pulse.period) === period) {
        return new Response(body, {
          status: 200,
          headers: {
            'Content-Type': 'application/json',
            'Cache-Control': IMMUTABLE,
            'Access-Control-Allow-Origin': '*',
            'X-Beacon-Answered-By': 'edge'
          }
        })
      }
    } else if (exact.body) {
      await exact.body.cancel()
    }
  }
  const answer = await fetchImpl(`${env.GATEWAY_ORIGIN}${url.pathname}`)
  const headers = new Headers(answer.headers)
  headers.set('X-Beacon-Answered-By', 'gateway')
  return new Response(answer.body, { status: answer.status, headers })
}

export default {
  async fetch(request, env) {
    const answer = await handle(request, env)
    return answer ?? fetch(`${env.BUCKET_ORIGIN}${new URL(request.url).pathname}`)
  }
}
