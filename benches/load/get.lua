-- wrk script of benches/load/egress: GET with the user's bearer token (what a client
-- sends through nginx), every response must be 200. Environment:
--   BEARER_FILE  file holding the token for `Authorization: Bearer` (optional)
-- done() prints: RESULT requests=<n> non200=<n> socket_errors=<n> rps=<x>
--                p50_us=<n> p99_us=<n> p999_us=<n> max_us=<n>
local path = os.getenv("BEARER_FILE")
if path and path ~= "" then
  local f = assert(io.open(path, "rb"))
  wrk.headers["Authorization"] = "Bearer " .. f:read("*a"):gsub("%s+$", "")
  f:close()
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non200 = 0 end
function response(status, headers, body) if status ~= 200 then non200 = non200 + 1 end end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non200") end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d non200=%d socket_errors=%d rps=%.1f p50_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, bad, e.connect + e.read + e.write + e.timeout,
    summary.requests / (summary.duration / 1e6), latency:percentile(50),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
