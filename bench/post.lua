-- The same JSON POST every time: a body built once by bench/run.py and read from a file.
-- BENCH_PATH: the route; BENCH_BODY_FILE: the JSON body (a 1000-message batch is
-- too big to pass well in the environment); BENCH_AUTHORIZATION: the Authorization
-- header's value (Bearer for the API, Basic for the simulator); BENCH_DELAY_MS: a
-- per-connection pause (for a target rate).
local path = assert(os.getenv("BENCH_PATH"), "BENCH_PATH is not set: run bench/run.py")
local name = assert(os.getenv("BENCH_BODY_FILE"), "BENCH_BODY_FILE is not set: run bench/run.py")
local file = assert(io.open(name, "rb"))
local body = file:read("*a")
file:close()
local headers = {["Content-Type"] = "application/json", ["Authorization"] = os.getenv("BENCH_AUTHORIZATION") or ""}
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")

request = function()
  return wrk.format("POST", path, headers, body)
end

if pause > 0 then
  delay = function() return pause end
end
