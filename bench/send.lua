-- Sends through the API: JSON POSTs with the bench API key.
local path = os.getenv("BENCH_PATH") or "/api/sms-gateways/1/send"
local key = os.getenv("BENCH_KEY") or ""
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")

request = function()
  return wrk.format("POST", path, {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key},
                    '{"to_number": "+14155550123", "message": "benchmark"}')
end

if pause > 0 then
  delay = function() return pause end
end
