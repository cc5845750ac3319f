-- wrk script of the load benchmark (benches/load/run): POST /token, token exchange.
--
-- Environment:
--   AUTHORIZATION       the Authorization header value (client_secret_basic)
--   SUBJECT_TOKEN_FILE  file holding the subject token
--   ACTOR_TOKEN_FILE    file holding the actor token (optional: delegation when set,
--                       impersonation when not)
--   AUDIENCE, SCOPE     requested audience and scope (optional)
--   DELAY_MS            mean milliseconds each connection waits between a response and
--                       its next request (optional; used to run below saturation)
--
-- Every response must be 200: the others are counted, and done() reports them (the run
-- script fails on any). done() prints one line for the run script:
--   RESULT requests=<n> non200=<n> socket_errors=<n> duration_us=<n> rps=<x>
--          p50_us=<n> p99_us=<n> p999_us=<n> max_us=<n>

local function read_file(path)
  local f = assert(io.open(path, "rb"), "cannot open " .. path)
  local s = f:read("*a"):gsub("%s+$", "")
  f:close()
  return s
end

local function encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local access_token = "urn:ietf:params:oauth:token-type:access_token"
local fields = {
  { "grant_type", "urn:ietf:params:oauth:grant-type:token-exchange" },
  { "subject_token", read_file(assert(os.getenv("SUBJECT_TOKEN_FILE"), "SUBJECT_TOKEN_FILE")) },
  { "subject_token_type", access_token },
}
local actor_file = os.getenv("ACTOR_TOKEN_FILE")
if actor_file and actor_file ~= "" then
  table.insert(fields, { "actor_token", read_file(actor_file) })
  table.insert(fields, { "actor_token_type", access_token })
end
for _, name in ipairs({ "AUDIENCE", "SCOPE" }) do
  local value = os.getenv(name)
  if value and value ~= "" then table.insert(fields, { name:lower(), value }) end
end
local parts = {}
for _, f in ipairs(fields) do table.insert(parts, encode(f[1]) .. "=" .. encode(f[2])) end

wrk.method = "POST"
wrk.body = table.concat(parts, "&")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = assert(os.getenv("AUTHORIZATION"), "AUTHORIZATION")

-- A random pause (uniform over 0 .. 2 * DELAY_MS, whole milliseconds: wrk's timer
-- resolution) keeps the connections from falling into step and arriving in bursts.
local delay_ms = tonumber(os.getenv("DELAY_MS") or "") or 0
if delay_ms > 0 then
  math.randomseed(os.time())
  function delay() return math.random(0, 2 * delay_ms) end
end

-- Per-thread counters, summed in done().
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  non200 = 0
  first_bad = ""
end
function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    if first_bad == "" then first_bad = status .. " " .. (body or "") end
  end
end

function done(summary, latency, requests)
  local bad, sample = 0, ""
  for _, t in ipairs(threads) do
    bad = bad + t:get("non200")
    if sample == "" then sample = t:get("first_bad") end
  end
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d non200=%d socket_errors=%d duration_us=%d rps=%.1f " ..
    "p50_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, bad, socket_errors, summary.duration, summary.requests / seconds,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
  if bad > 0 then io.write("FIRST_NON200 " .. sample .. "\n") end
end
