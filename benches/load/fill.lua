-- wrk script of benches/load/egress: impersonation exchanges, each request with the next
-- of the distinct subject tokens in MANY_FILE (one per line), so that each fills one entry
-- of the re-issue cache. Each token is sent once: the thread stops when every token has
-- had its answer (or at wrk's -d, whichever is first), so that the store holds one
-- lineage record per token, however fast the server is. Run it with -t1.
-- Environment: AUTHORIZATION, MANY_FILE.
-- done() prints: RESULT requests=<n> non200=<n>
local tokens = {}
-- (The parentheses keep assert's second value, its message, from io.lines: a format.)
for line in io.lines((assert(os.getenv("MANY_FILE"), "MANY_FILE"))) do
  if line ~= "" then table.insert(tokens, line) end
end
local prefix = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange" ..
  "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&subject_token="
local authorization = assert(os.getenv("AUTHORIZATION"), "AUTHORIZATION")
local next_token = 0
local threads = {}
function setup(thread)
  thread:set("offset", #threads)
  table.insert(threads, thread)
end
function init(args) non200 = 0; answered = 0; next_token = offset end
function request()
  next_token = next_token % #tokens + 1
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = authorization,
  }, prefix .. tokens[next_token])
end
function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
  answered = answered + 1
  if answered >= #tokens then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non200") end
  io.write(string.format("RESULT requests=%d non200=%d\n", summary.requests, bad))
end
