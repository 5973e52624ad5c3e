-- Jasmin-style level-2 receipts as form POSTs, each for a random stored message.
-- BENCH_MESSAGES: how many messages exist (ids bench-1 .. bench-N); BENCH_PATH: the
-- route with the token; BENCH_DELAY_MS: per-connection pause (for a target rate).
local n = tonumber(os.getenv("BENCH_MESSAGES") or "100000")
local path = os.getenv("BENCH_PATH") or "/webhooks/jasmin/1/dlr"
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local counter = 0

setup = function(thread)
  thread:set("seed", math.random(1, 1000000))
end

init = function(args)
  math.randomseed(seed or os.time())
end

request = function()
  local id = math.random(1, n)
  local body = "id=bench-" .. id .. "&level=2&message_status=DELIVRD&connector=a0000002&id_smsc=A0000002"
            .. "&sub=001&dlvrd=001&subdate=2611262105&donedate=2611262105&err=000&text=hello"
  return wrk.format("POST", path, {["Content-Type"] = "application/x-www-form-urlencoded",
                                   ["User-Agent"] = "Jasmin gateway/1.0 DLRThrower"}, body)
end

if pause > 0 then
  delay = function() return pause end
end
