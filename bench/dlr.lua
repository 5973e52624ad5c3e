-- Jasmin-style level-2 receipts as form POSTs, each for a random stored message.
-- BENCH_MESSAGES: how many messages exist (ids bench-1 .. bench-N); BENCH_PATH: the
-- route with the token; BENCH_DELAY_MS: per-connection pause (for a target rate).
-- BENCH_BODY: the receipt's form fields after its id; BENCH_USER_AGENT: the thrower's.
-- bench/run.py builds both from api.providers.jasmin, so they are Jasmin's own.
local n = tonumber(os.getenv("BENCH_MESSAGES") or "100000")
local path = os.getenv("BENCH_PATH") or "/webhooks/jasmin/1/dlr"
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local fields = assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set: run bench/run.py")
local agent = assert(os.getenv("BENCH_USER_AGENT"), "BENCH_USER_AGENT is not set: run bench/run.py")
local counter = 0

setup = function(thread)
  thread:set("seed", math.random(1, 1000000))
end

init = function(args)
  math.randomseed(seed or os.time())
end

request = function()
  local id = math.random(1, n)
  local body = "id=bench-" .. id .. "&" .. fields
  return wrk.format("POST", path, {["Content-Type"] = "application/x-www-form-urlencoded",
                                   ["User-Agent"] = agent}, body)
end

if pause > 0 then
  delay = function() return pause end
end
