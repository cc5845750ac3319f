-- wrk script of the introspection load benchmark (benches/load/introspect): POST
-- /introspect with one token, or (FLOOR=1) the same request to the HTTP floor server.
--
-- Environment:
--   AUTHORIZATION  the Authorization header value (client_secret_basic)
--   TOKEN_FILE     file holding the token to introspect
--   DELAY_MS       mean milliseconds each connection waits between a response and its
--                  next request (optional; below saturation)
--   EXPECT         a string every response body must contain (default "active":true)
--
-- done() prints, for the run script:
--   RESULT requests=<n> non200=<n> socket_errors=<n> duration_us=<n> rps=<x>
--          p50_us=<n> p99_us=<n> p999_us=<n> max_us=<n>

local function read_file(path)
  local f = assert(io.open(path, "rb"), "cannot open " .. path)
  local s = f:read("*a"):gsub("%s+$", "")
  f:close()
  return s
end

wrk.method = "POST"
wrk.body = "token=" .. read_file(assert(os.getenv("TOKEN_FILE"), "TOKEN_FILE"))
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = assert(os.getenv("AUTHORIZATION"), "AUTHORIZATION")
local expect = os.getenv("EXPECT") or '"active":true'

local delay_ms = tonumber(os.getenv("DELAY_MS") or "") or 0
if delay_ms > 0 then
  math.randomseed(os.time())
  function delay() return math.random(0, 2 * delay_ms) end
end

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  bad = 0
  first_bad = ""
end
function response(status, headers, body)
  if status ~= 200 or not string.find(body or "", expect, 1, true) then
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. (body or "") end
  end
end

function done(summary, latency, requests)
  local n, sample = 0, ""
  for _, t in ipairs(threads) do
    n = n + t:get("bad")
    if sample == "" then sample = t:get("first_bad") end
  end
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d non200=%d socket_errors=%d duration_us=%d rps=%.1f " ..
    "p50_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, n, e.connect + e.read + e.write + e.timeout, summary.duration,
    summary.requests / seconds, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.max))
  if n > 0 then io.write("FIRST_NON200 " .. sample .. "\n") end
end
